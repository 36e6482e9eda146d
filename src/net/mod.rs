//! Network helpers shared by the front ends, so that no front end imports
//! another: the accept loop's back-off ([`accept`]), who a client is behind
//! a proxy ([`client_ip`]), HTTP refusals as problem documents
//! ([`problem`], used by REST and by the WebSocket upgrade alike), which
//! browser origins may connect ([`origin`]), a handle that ends the
//! HTTP connection a streamed answer runs on ([`abort`]), and the staged
//! close that keeps a reset from destroying the end of an answer
//! ([`linger`]).
//!
//! Nothing here knows about routing or any one front end's wire format.

pub mod abort;
pub mod accept;
pub mod client_ip;
pub mod linger;
pub mod origin;
pub mod problem;
