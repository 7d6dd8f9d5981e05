//! End-to-end tests of the `modelpack` binary's general behaviour.
use crate::common;

#[test]
fn unknown_command_is_usage_error() {
    common::modelpack().arg("frobnicate").assert().code(2);
}
