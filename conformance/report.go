package conformance

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Verdict is the outcome of one rule's check.
type Verdict string

const (
	// Pass: the broker did what the rule asks, as seen on the wire.
	Pass Verdict = "PASS"
	// Fail: it did not; the detail says what it did instead.
	Fail Verdict = "FAIL"
	// Deviation: it did not, and the broker's own documentation says so
	// (RabbitMQ's "Compatibility and Conformance" page): a deviation
	// documented by the broker, not a plain failure.
	Deviation Verdict = "DEVIATION"
	// Skip: not checked; the detail says why.
	Skip Verdict = "SKIP"
)

// Result is the verdict on one rule.
type Result struct {
	Rule     Rule
	Verdict  Verdict
	Detail   string        // what the broker did, or why the rule was skipped
	Note     string        // for a Deviation: what the broker documents
	RabbitMQ string        // the rule's status on RabbitMQ's compatibility page, if listed
	Duration time.Duration // how long the check ran

	// Transcript lists the frames of a check that did not pass.
	Transcript []string `json:",omitempty"`

	// Declared names the queues and exchanges the check declared (or
	// tried to), all deleted when it ended.
	Declared []string `json:",omitempty"`
}

// Report is the outcome of a run.
type Report struct {
	Broker   string // product and version, from connection.start
	URL      string // password removed
	Vhost    string
	Started  time.Time
	Duration time.Duration
	Results  []Result
}

// Count returns how many results have verdict v.
func (r *Report) Count(v Verdict) int {
	n := 0
	for _, res := range r.Results {
		if res.Verdict == v {
			n++
		}
	}
	return n
}

// group is a result's group in the totals: its class, "domain" for the
// rules of a domain, "general" and "extension" for the rules the suite
// adds.
func group(r *Rule) string {
	switch {
	case r.Source != "":
		return r.Source
	case r.Class != "":
		return r.Class
	}
	return "domain"
}

var verdicts = []Verdict{Pass, Fail, Deviation, Skip}

// totals counts verdicts by key.
func (r *Report) totals(key func(*Rule) string) (keys []string, counts map[string]map[Verdict]int) {
	counts = map[string]map[Verdict]int{}
	for i := range r.Results {
		k := key(&r.Results[i].Rule)
		if counts[k] == nil {
			counts[k] = map[Verdict]int{}
			keys = append(keys, k)
		}
		counts[k][r.Results[i].Verdict]++
	}
	sort.Strings(keys)
	return keys, counts
}

// WriteTable writes the results as a table, then the totals per class and
// per level.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Broker %s at %s (vhost %s), %d rules in %s\n\n", r.Broker, r.URL, r.Vhost, len(r.Results), r.Duration.Round(time.Millisecond))
	fmt.Fprintln(tw, "VERDICT\tLEVEL\tRULE\tDETAIL")
	for _, res := range r.Results {
		detail := oneLine(res.Detail)
		if res.Note != "" {
			detail += " [documented by the broker: " + res.Note + "]"
		}
		id := res.Rule.ID
		if res.Rule.Extension() {
			id += " (extension)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", res.Verdict, res.Rule.Level, id, truncate(detail, 160))
	}
	tw.Flush()
	for _, by := range []struct {
		title string
		key   func(*Rule) string
	}{{"CLASS", group}, {"LEVEL", func(r *Rule) string { return r.Level }}} {
		keys, counts := r.totals(by.key)
		fmt.Fprintf(tw, "\n%s\tPASS\tFAIL\tDEVIATION\tSKIP\n", by.title)
		all := map[Verdict]int{}
		for _, k := range keys {
			fmt.Fprintf(tw, "%s", k)
			for _, v := range verdicts {
				fmt.Fprintf(tw, "\t%d", counts[k][v])
				all[v] += counts[k][v]
			}
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "total\t%d\t%d\t%d\t%d\n", all[Pass], all[Fail], all[Deviation], all[Skip])
		tw.Flush()
	}
	return tw.Flush()
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteJUnit writes the report as JUnit XML: a test suite per class, a
// test case per rule; FAIL is a failure, SKIP and DEVIATION are skipped
// (a deviation's message starts with "deviation documented by the broker").
func (r *Report) WriteJUnit(w io.Writer) error {
	type failure struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	}
	type testcase struct {
		Name      string   `xml:"name,attr"`
		Classname string   `xml:"classname,attr"`
		Time      float64  `xml:"time,attr"`
		Failure   *failure `xml:"failure,omitempty"`
		Skipped   *failure `xml:"skipped,omitempty"`
	}
	type testsuite struct {
		Name     string     `xml:"name,attr"`
		Tests    int        `xml:"tests,attr"`
		Failures int        `xml:"failures,attr"`
		Skipped  int        `xml:"skipped,attr"`
		Cases    []testcase `xml:"testcase"`
	}
	suites := map[string]*testsuite{}
	var names []string
	for _, res := range r.Results {
		g := group(&res.Rule)
		s := suites[g]
		if s == nil {
			s = &testsuite{Name: g}
			suites[g] = s
			names = append(names, g)
		}
		tc := testcase{Name: res.Rule.ID + " [" + res.Rule.Level + "]", Classname: "amqp-conformance." + g, Time: res.Duration.Seconds()}
		switch res.Verdict {
		case Fail:
			tc.Failure = &failure{Message: oneLine(res.Detail), Text: strings.Join(res.Transcript, "\n")}
			s.Failures++
		case Skip:
			tc.Skipped = &failure{Message: oneLine(res.Detail)}
			s.Skipped++
		case Deviation:
			tc.Skipped = &failure{Message: "deviation documented by the broker: " + res.Note + ": " + oneLine(res.Detail)}
			s.Skipped++
		}
		s.Tests++
		s.Cases = append(s.Cases, tc)
	}
	sort.Strings(names)
	out := struct {
		XMLName xml.Name     `xml:"testsuites"`
		Name    string       `xml:"name,attr"`
		Suites  []*testsuite `xml:"testsuite"`
	}{Name: "amqp-conformance " + r.Broker}
	for _, n := range names {
		out.Suites = append(out.Suites, suites[n])
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// Verdicts returns one "VERDICT rule" line per result, sorted by rule:
// what a golden file pins.
func (r *Report) Verdicts() string {
	lines := make([]string, 0, len(r.Results))
	for _, res := range r.Results {
		lines = append(lines, fmt.Sprintf("%-9s %s", res.Verdict, res.Rule.ID))
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][10:] < lines[j][10:] })
	return strings.Join(lines, "\n") + "\n"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// redact removes the password from a URL.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
