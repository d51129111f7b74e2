//! The Lua scripts that make each operation one atomic step in Redis.
//!
//! Each script is `lua/prelude.lua` followed by its own file. They run with
//! EVALSHA (redis-rs loads them again after a restart that forgot them).

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        #[doc = concat!("`lua/", $file, "`")]
        pub static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/prelude.lua"),
                include_str!(concat!("lua/", $file))
            ))
        });
    };
}

script!(CREATE, "create.lua");
script!(SEND, "send.lua");
script!(RECEIVE, "receive.lua");
script!(ACK, "ack.lua");
script!(HOLD, "hold.lua");
script!(MOVE, "move.lua");
script!(REQUEUE, "requeue.lua");
script!(PURGE_DEAD, "purge_dead.lua");
script!(PURGE, "purge.lua");
script!(DELETE, "delete.lua");
script!(INFO, "info.lua");
script!(SCAN, "scan.lua");
script!(COMMIT, "commit.lua");
