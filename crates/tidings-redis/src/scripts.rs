//! The Lua scripts that make each operation one atomic step in Redis.
//!
//! Each script is `lua/prelude.lua` followed by its own file. They run with
//! EVALSHA; all are loaded when a broker opens (and again after Redis
//! forgets them), because the read path runs one inside a pipeline.

use std::sync::LazyLock;

use redis::Script;

macro_rules! scripts {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(
            #[doc = concat!("`lua/", $file, "`")]
            pub static $name: LazyLock<Script> = LazyLock::new(|| {
                Script::new(concat!(include_str!("lua/prelude.lua"), include_str!(concat!("lua/", $file))))
            });
        )*
        /// The code of every script, to load them all at once.
        pub const SOURCES: &[&str] = &[
            $(concat!(include_str!("lua/prelude.lua"), include_str!(concat!("lua/", $file)))),*
        ];
    };
}

scripts! {
    CREATE => "create.lua",
    SEND => "send.lua",
    PREPARE => "prepare.lua",
    RECLAIM => "reclaim.lua",
    EXPIRE => "expire.lua",
    MAINTAIN => "maintain.lua",
    ACK => "ack.lua",
    HOLD => "hold.lua",
    MOVE => "move.lua",
    REQUEUE => "requeue.lua",
    PURGE_DEAD => "purge_dead.lua",
    PURGE => "purge.lua",
    DELETE => "delete.lua",
    INFO => "info.lua",
    PENDING => "pending.lua",
    FORGET => "forget.lua",
    UNGROUP => "ungroup.lua",
    SCAN => "scan.lua",
    COMMIT => "commit.lua",
}
