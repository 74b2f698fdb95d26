package conformance

// unchecked says, for each rule without a check, why: a SKIP with this
// reason stands for it in every report.
var unchecked = map[string]string{}
