//! The commands that read and check rather than serve (part of the `xdhcp`
//! binary, built on the library like any other client of it).

pub mod check;
pub mod view;
