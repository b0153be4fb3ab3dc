//! Fleets whose agents agree through etcd (DESIGN.md "Fleets"): the fleet's
//! intended release is recorded there, one elected agent decides, and every
//! host's agent stages, switches and catches up by itself with the same
//! host steps an ssh controller orders.

pub mod changes;
pub mod command;
pub mod decision;
pub mod keys;
pub mod leader;
pub mod member;
pub mod part;
pub mod peer;
pub mod records;
pub mod request;
pub mod settings;
pub mod store;
