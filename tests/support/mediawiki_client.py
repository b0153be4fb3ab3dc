"""A MediaWiki user, through its API: logs in, then edits pages and uploads
PNG images at a steady pace, printing what the wiki acknowledged; or checks
that everything acknowledged is still there.

    mediawiki_client.py write PORT USER PASSWORD COUNT EVERY_MS STOP_FILE
    mediawiki_client.py verify PORT ACKNOWLEDGED_FILE

`write` prints `page N` / `file N` for each save the API confirmed and
`error ...` for each it refused; it stops after COUNT rounds or once
STOP_FILE exists. `verify` prints `missing ...` for each acknowledged save
the wiki no longer has, then `verified P pages F files`.
"""

import http.cookiejar
import json
import os
import struct
import sys
import time
import urllib.parse
import urllib.request
import uuid
import zlib


def png(n):
    """A valid 1x1 PNG whose colour and text chunk say n."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixel = bytes([0, n % 256, (n // 256) % 256, 7])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"zdeploy\x00" + str(n).encode())
        + chunk(b"IDAT", zlib.compress(pixel))
        + chunk(b"IEND", b"")
    )


class Wiki:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def api(self, params, files=None):
        params = dict(params, format="json", formatversion="2")
        if files is None:
            data = urllib.parse.urlencode(params).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        else:
            boundary = uuid.uuid4().hex
            parts = []
            for key, value in params.items():
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
                )
            for key, (name, content) in files.items():
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{name}"\r\n'
                    f"Content-Type: image/png\r\n\r\n".encode()
                    + content
                    + b"\r\n"
                )
            parts.append(f"--{boundary}--\r\n".encode())
            data = b"".join(parts)
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        request = urllib.request.Request(self.base + "/api.php", data=data, headers=headers)
        with self.opener.open(request, timeout=30) as response:
            return json.loads(response.read())

    def get(self, path):
        with self.opener.open(self.base + path, timeout=30) as response:
            return response.status, response.read()

    def login(self, user, password):
        token = self.api({"action": "query", "meta": "tokens", "type": "login"})
        answer = self.api(
            {
                "action": "clientlogin",
                "username": user,
                "password": password,
                "logintoken": token["query"]["tokens"]["logintoken"],
                "loginreturnurl": self.base + "/",
            }
        )
        if answer.get("clientlogin", {}).get("status") != "PASS":
            sys.exit(f"login failed: {answer}")
        tokens = self.api({"action": "query", "meta": "tokens"})
        self.csrf = tokens["query"]["tokens"]["csrftoken"]


def page_title(n):
    return f"Zdeploy page {n}"


def file_name(n):
    return f"Zdeploy-{n}.png"


def write(port, user, password, count, every_ms, stop_file):
    wiki = Wiki(port)
    wiki.login(user, password)
    next_at = time.monotonic()
    for n in range(count):
        if os.path.exists(stop_file):
            break
        try:
            answer = wiki.api(
                {
                    "action": "edit",
                    "title": page_title(n),
                    "text": f"saved text {n}",
                    "token": wiki.csrf,
                }
            )
            if answer.get("edit", {}).get("result") == "Success":
                print(f"page {n}", flush=True)
            else:
                print(f"error page {n}: {answer}", flush=True)
            if n % 2 == 0:
                answer = wiki.api(
                    {
                        "action": "upload",
                        "filename": file_name(n),
                        "ignorewarnings": "1",
                        "token": wiki.csrf,
                    },
                    files={"file": (file_name(n), png(n))},
                )
                if answer.get("upload", {}).get("result") == "Success":
                    print(f"file {n}", flush=True)
                else:
                    print(f"error file {n}: {answer}", flush=True)
        except Exception as e:  # a failed request is what the test looks for
            print(f"error round {n}: {e!r}", flush=True)
        next_at = max(next_at + every_ms / 1000, time.monotonic())
        time.sleep(max(0, next_at - time.monotonic()))


def batches(items, size=50):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def verify(port, acknowledged):
    """Ask for the acknowledged pages and images 50 at a time, then fetch
    every image from where the wiki says it is."""
    wiki = Wiki(port)
    saved = [line.split() for line in open(acknowledged)]
    pages = [int(n) for kind, n in saved if kind == "page"]
    files = [int(n) for kind, n in saved if kind == "file"]
    for batch in batches(pages):
        titles = {page_title(n): n for n in batch}
        answer = wiki.api(
            {
                "action": "query",
                "titles": "|".join(titles),
                "prop": "revisions",
                "rvprop": "content",
                "rvslots": "main",
            }
        )
        found = {}
        for page in answer["query"]["pages"]:
            revisions = page.get("revisions") or [{}]
            found[page["title"]] = revisions[0].get("slots", {}).get("main", {}).get("content")
        for title, n in titles.items():
            if found.get(title) != f"saved text {n}":
                print(f"missing page {n}: {found.get(title)!r}")
    for batch in batches(files):
        titles = {"File:" + file_name(n): n for n in batch}
        answer = wiki.api(
            {"action": "query", "titles": "|".join(titles), "prop": "imageinfo", "iiprop": "url"}
        )
        urls = {
            page["title"]: page["imageinfo"][0]["url"]
            for page in answer["query"]["pages"]
            if page.get("imageinfo")
        }
        for title, n in titles.items():
            if title not in urls:
                print(f"missing file {n}: no image info")
                continue
            path = urllib.parse.urlparse(urls[title]).path
            status, body = wiki.get(path)
            if status != 200 or body != png(n):
                print(f"missing file {n}: {status} at {path}")
    print(f"verified {len(pages)} pages {len(files)} files")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        port, user, password, count, every_ms, stop_file = sys.argv[2:8]
        write(int(port), user, password, int(count), int(every_ms), stop_file)
    else:
        verify(int(sys.argv[2]), sys.argv[3])
