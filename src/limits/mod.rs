//! Traffic limits: token buckets and concurrency slots.

pub mod shared;
