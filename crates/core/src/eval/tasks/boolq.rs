//! BoolQ (Clark et al. 2019, validation split; passages with a yes/no question): `boolq.jsonl` of `{query, choices, gold}` rows, the query used as the context
//! as it is. Reports `acc` (METHODS.md §4.2).

use crate::eval::tasks::{jsonl, Metric, TaskSpec};

pub const TASK: TaskSpec = TaskSpec {
    id: "boolq",
    file: "boolq.jsonl",
    format: jsonl::CHOICES_FORMAT,
    metric: Metric::Acc,
    read: jsonl::read_choices,
};
