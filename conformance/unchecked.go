package conformance

// unchecked says, for each rule without a check, why there is none: a SKIP
// with the reason stands for it in every report. A test keeps this list and
// the checks in step with the rules.
var unchecked = map[string]string{
	"redelivered/hinting":                                   "a rule for clients (how they treat the redelivered flag): nothing a broker does",
	"connection.start/client-support":                       "a rule for clients (what a client does with a server's protocol version): a broker cannot be checked on it",
	"connection.start-ok.client-properties/required-fields": "a rule for clients (what start-ok carries)",
	"connection.start-ok.mechanism/security":                "a rule for clients (which SASL mechanism to choose)",
	"connection.open.virtual-host/separation":               "needs two virtual hosts the user can open; creating one reconfigures the broker, which the suite never does",
	"connection.close-ok/reporting":                         "about logging, which does not show on the wire",
	"channel.close-ok/reporting":                            "about logging, which does not show on the wire",
	"channel.flow/throttling":                               "the broker's own use of channel.flow cannot be provoked without overloading it",
	"channel.flow/expected-behaviour":                       "needs the broker to ask for flow control first (see channel.flow/throttling)",
	"exchange/extensions":                                   "which other exchange types a broker offers is its choice; nothing on the wire says which to try",
	"queue.purge/03":                                        "about administrators' recovery of purged messages and the broker's storage: not visible to a client",
	"queue.delete/01":                                       "where a deleted queue's messages go is not visible to a client unless the broker names a dead-letter queue",
	"basic/04":                                              "about the broker's storage of transient messages: not visible to a client",
	"basic/05":                                              "needs a queue size limit configured in the broker",
	"basic.reject/01":                                       "needs a rejection while the broker is midway through writing a delivery's frames, which a client cannot time",
	"basic.nack/01":                                         "needs a nack while the broker is midway through writing a delivery's frames, which a client cannot time",
	"basic.reject/03":                                       "a rule for clients (not to use reject to select messages)",
	"basic.nack/03":                                         "a rule for clients (not to use nack to select messages)",
	"basic.nack/04":                                         "a rule for clients (handling nacks in confirm mode)",
	"tx/not multiple queues":                                "a rule for applications (what not to rely on)",
	"tx/not immediate":                                      "a rule for applications (what not to rely on)",
	"tx/not mandatory":                                      "a rule for applications (what not to rely on)",
	"confirm/time guarantees":                               "a rule for applications (what not to assume about timing)",
}
