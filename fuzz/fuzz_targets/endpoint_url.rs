//! The URL parser: any string parses to an endpoint or a typed `UrlError`, never a panic;
//! an endpoint that parsed prints as a URL that parses back to the same endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ep) = url.parse::<ipckit::Endpoint>() else {
        return;
    };
    let _ = ep.effective_max_message_size();
    let _ = ep.read_spin();
    let printed = ep.to_string();
    match printed.parse::<ipckit::Endpoint>() {
        Ok(again) => assert_eq!(again, ep, "{url:?} printed as {printed:?}"),
        Err(e) => panic!("{url:?} printed as {printed:?}, which does not parse: {e}"),
    }
});
