//! The peers shardbus is compared against, one file each: [`seed`] (the original Go design,
//! ported literally), [`crossbeam_router`] (shards with crossbeam inboxes), [`disruptor`] (the
//! `disruptor` crate) and [`floor`] (bare hand-offs). They share the harness of
//! [`crate::harness`]: the same plan, checkers, start gate and pinning as the shardbus runner.

pub mod crossbeam_router;
pub mod disruptor;
pub mod floor;
pub mod seed;
