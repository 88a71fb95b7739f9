//! A trap's condition as the OCI profile's `args` write it: the condition itself, and the
//! rules whose union is its complement (what the profile's own action must still cover).

use serde_json::{json, Value};

use crate::traps::Cond;

/// The OCI `args` of a trap's condition.
pub(super) fn cond_args(cond: Cond) -> Value {
    match cond {
        Cond::BitSet { index, bit } => json!([{"index": index, "value": bit,
            "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ"}]),
        Cond::IntEquals { index, value } => json!([{"index": index, "value": 0xffff_ffff_u64,
            "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}]),
    }
}

/// The OCI `args` of the rules whose union is the complement of a trap's condition (the
/// arguments of one rule must all hold; any one rule matching is enough). An `int` that is not
/// `value` differs from it in one of its 32 bits: one rule per bit, as no single comparison
/// of libseccomp's says "the low 32 bits differ".
pub(super) fn complement_args(cond: Cond) -> Vec<Value> {
    match cond {
        Cond::BitSet { index, bit } => vec![json!([{"index": index, "value": bit,
            "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])],
        Cond::IntEquals { index, value } => (0..32)
            .map(|b| {
                let bit = 1u64 << b;
                json!([{"index": index, "value": bit,
                    "valueTwo": !u64::from(value) & bit, "op": "SCMP_CMP_MASKED_EQ"}])
            })
            .collect(),
    }
}
