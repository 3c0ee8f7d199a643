//! ARC-Challenge (Clark et al. 2018, test split): `arc_challenge.jsonl` of `{query, choices, gold}` rows, the query used as the context
//! as it is. Reports `acc_norm` (METHODS.md §4.2).

use crate::eval::tasks::{jsonl, Metric, TaskSpec};

pub const TASK: TaskSpec = TaskSpec {
    id: "arc_challenge",
    file: "arc_challenge.jsonl",
    format: jsonl::CHOICES_FORMAT,
    metric: Metric::AccNorm,
    read: jsonl::read_choices,
};
