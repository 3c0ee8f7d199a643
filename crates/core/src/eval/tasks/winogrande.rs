//! WinoGrande (Sakaguchi et al. 2020, XL dev split): `winogrande.jsonl` of
//! `{context_options, continuation, gold}` rows, scored by partial evaluation as lm-eval does: the
//! shared continuation under each context option (METHODS.md §4.2). Reports `acc`.

use crate::eval::tasks::{jsonl, Metric, TaskSpec};

pub const TASK: TaskSpec = TaskSpec {
    id: "winogrande",
    file: "winogrande.jsonl",
    format: jsonl::CONTEXTS_FORMAT,
    metric: Metric::Acc,
    read: jsonl::read_contexts,
};
