//! PIQA (Bisk et al. 2020, validation split; a goal and two solutions): `piqa.jsonl` of `{query, choices, gold}` rows, the query used as the context
//! as it is. Reports `acc` (METHODS.md §4.2).

use crate::eval::tasks::{jsonl, Metric, TaskSpec};

pub const TASK: TaskSpec = TaskSpec {
    id: "piqa",
    file: "piqa.jsonl",
    format: jsonl::CHOICES_FORMAT,
    metric: Metric::Acc,
    read: jsonl::read_choices,
};
