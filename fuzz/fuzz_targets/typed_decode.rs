//! The typed (serde + postcard) decode path: a message that does not decode is
//! `Error::Decode`, never a panic or a huge allocation; a value that decodes re-encodes to
//! bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Sample {
    id: u32,
    name: String,
    values: Vec<i64>,
    flag: Option<bool>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Request {
    Ping,
    Get { key: String, version: Option<u64> },
    Put(String, Vec<u8>),
    Batch(Vec<Request>),
    Tagged(BTreeMap<String, (i16, char)>),
}

fn check<T>(bytes: &[u8])
where
    T: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    match ipckit::decode::<T>(bytes) {
        Ok(v) => {
            let again = postcard::to_stdvec(&v).expect("a decoded value encodes");
            let back: T = ipckit::decode(&again).expect("an encoded value decodes");
            assert_eq!(back, v);
        }
        Err(ipckit::Error::Decode { .. }) => {}
        Err(e) => panic!("decode failed with a non-Decode error: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => check::<Sample>(bytes),
        1 => check::<Request>(bytes),
        2 => check::<String>(bytes),
        3 => check::<Vec<u8>>(bytes),
        4 => check::<(u32, String, Vec<u16>)>(bytes),
        5 => check::<Option<Vec<Option<u128>>>>(bytes),
        6 => check::<BTreeMap<u64, String>>(bytes),
        _ => check::<(bool, i64, char, [u8; 3])>(bytes),
    }
});
