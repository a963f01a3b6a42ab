//! Fuzz target for SpectatorD datagrams (see `argus_agent::spectatord::fuzz_datagram`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    argus_agent::spectatord::fuzz_datagram(data);
});
