//! The REST push body: arbitrary bytes through the same `serde_json` parse
//! `POST /push` runs, then `payload_from_data`. A non-string `data` must come
//! out as the caller's exact text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::model::{PushRequest, payload_from_data};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<PushRequest>(data) else {
        return;
    };
    let raw = req.data.get();
    if let Ok(payload) = payload_from_data(&req.data) {
        if !raw.starts_with('"') {
            assert_eq!(payload.as_str(), raw);
        }
    }
    let _ = req.uid.into_unique();
});
