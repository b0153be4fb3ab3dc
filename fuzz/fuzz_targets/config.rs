//! Any text as a zdeploy.toml: it loads or is refused with an error, and
//! every app in it resolves or is refused — never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zdeploy::config::{ConfigFile, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/nonexistent/zdeploy.toml");
    let Ok(file) = ConfigFile::parse(path, text.to_string()) else {
        return;
    };
    let _ = file.agent(None);
    for name in file.app_names() {
        let _ = file.app(Some(name), &Overrides::default());
    }
});
