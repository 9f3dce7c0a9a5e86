//! Neutron's side of the data: its model as xdhcp stores and serves it, and
//! the Neutron API JSON that `xdhcp import` reads.

pub mod import;
pub mod model;
