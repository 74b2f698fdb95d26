// Command benchtable reads `go test -bench` output of this module's
// benchmarks (named Benchmark<Scenario>/<client>[/<variant>]) on stdin and
// prints Markdown tables: every client's medians, ours against amqp091-go,
// and the goals of issue #5 with whether they are met.
//
//	go test -run '^$' -bench . -benchmem -count 3 | tee out.txt
//	go run ./cmd/benchtable < out.txt
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

const (
	ours        = "amqp"
	oursRecycle = "amqp-recycle" // ours with ConsumerOptions.Recycle and Delivery.Release
	incumbent   = "amqp091"
	raw         = "raw"
	amqplib     = "amqplib" // the Node.js amqplib peer (consume only)
)

// result holds every sample of one benchmark, by unit.
type result struct {
	scenario, client string
	samples          map[string][]float64
}

// span returns the smallest and largest sample of unit.
func (r *result) span(unit string) (lo, hi float64, ok bool) {
	v := r.samples[unit]
	if len(v) == 0 {
		return 0, 0, false
	}
	return slices.Min(v), slices.Max(v), true
}

func (r *result) median(unit string) (float64, bool) {
	v := slices.Clone(r.samples[unit])
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

var procSuffix = regexp.MustCompile(`-\d+$`)

func parse(in io.Reader) (map[string]*result, []string, error) {
	results := map[string]*result{}
	var order []string
	s := bufio.NewScanner(in)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := procSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), "")
		parts := strings.Split(name, "/")
		if len(parts) < 2 {
			continue
		}
		r := results[name]
		if r == nil {
			scenario := strings.Join(append([]string{parts[0]}, parts[2:]...), "/")
			r = &result{scenario: scenario, client: parts[1], samples: map[string][]float64{}}
			results[name] = r
			order = append(order, name)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			r.samples[f[i+1]] = append(r.samples[f[i+1]], v)
		}
	}
	return results, order, s.Err()
}

func main() {
	results, order, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if len(order) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark lines on stdin")
		os.Exit(1)
	}
	get := func(scenario, client, unit string) (float64, bool) {
		for _, name := range order {
			r := results[name]
			if r.scenario == scenario && r.client == client {
				return r.median(unit)
			}
		}
		return 0, false
	}

	units := []string{"ns/op", "cpu-ns/msg", "allocs/op", "B/op", "msgs/s", "p50-ns"}
	fmt.Println("### Medians per benchmark")
	fmt.Println()
	fmt.Println("| scenario | client | ns/op | cpu-ns/msg | cpu-ns/msg range | allocs/op | B/op | msgs/s | msgs/s range | p50-ns | runs |")
	fmt.Println("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	var scenarios []string
	for _, name := range order {
		r := results[name]
		if !slices.Contains(scenarios, r.scenario) {
			scenarios = append(scenarios, r.scenario)
		}
	}
	for _, sc := range scenarios {
		for _, name := range order {
			r := results[name]
			if r.scenario != sc {
				continue
			}
			fmt.Printf("| %s | %s |", r.scenario, r.client)
			for _, u := range units {
				v, ok := r.median(u)
				fmt.Printf(" %s |", num(v, ok))
				if u == "cpu-ns/msg" || u == "msgs/s" {
					lo, hi, ok := r.span(u)
					if ok {
						fmt.Printf(" %s–%s |", num(lo, ok), num(hi, ok))
					} else {
						fmt.Printf(" – |")
					}
				}
			}
			fmt.Printf(" %d |\n", len(r.samples["ns/op"]))
		}
	}

	fmt.Println()
	fmt.Println("### Socket calls and system time per message (medians)")
	fmt.Println()
	fmt.Println("| scenario | client | reads/msg | writes/msg | sys-ns/msg | p99-ns |")
	fmt.Println("|---|---|--:|--:|--:|--:|")
	for _, sc := range scenarios {
		for _, name := range order {
			r := results[name]
			if r.scenario != sc {
				continue
			}
			fmt.Printf("| %s | %s |", r.scenario, r.client)
			for _, u := range []string{"reads/msg", "writes/msg", "sys-ns/msg", "p99-ns"} {
				v, ok := r.median(u)
				fmt.Printf(" %s |", num(v, ok))
			}
			fmt.Println()
		}
	}

	fmt.Println()
	fmt.Println("### Ours (amqp) against amqp091-go: ratio ours / amqp091 (lower is better)")
	fmt.Println()
	fmt.Println("| scenario | cpu-ns/msg | ns/op | allocs/op | p50-ns | msgs/s ours / raw |")
	fmt.Println("|---|--:|--:|--:|--:|--:|")
	for _, sc := range scenarios {
		fmt.Printf("| %s |", sc)
		for _, u := range []string{"cpu-ns/msg", "ns/op", "allocs/op", "p50-ns"} {
			a, ok1 := get(sc, ours, u)
			b, ok2 := get(sc, incumbent, u)
			if u == "p50-ns" && !strings.HasPrefix(sc, "RPC") {
				ok1 = false
			}
			fmt.Printf(" %s |", ratio(a, b, ok1 && ok2))
		}
		a, ok1 := get(sc, ours, "msgs/s")
		b, ok2 := get(sc, raw, "msgs/s")
		fmt.Printf(" %s |\n", ratio(a, b, ok1 && ok2))
	}

	fmt.Println()
	fmt.Println("### Ours against the raw floor: ratio ours / raw (1.00× is the least any client can do)")
	fmt.Println()
	fmt.Println("| scenario | client | cpu-ns/msg | p50-ns |")
	fmt.Println("|---|---|--:|--:|")
	for _, sc := range scenarios {
		if _, ok := get(sc, raw, "cpu-ns/msg"); !ok {
			continue
		}
		for _, client := range []string{ours, oursRecycle, incumbent} {
			if _, ok := get(sc, client, "cpu-ns/msg"); !ok {
				continue
			}
			fmt.Printf("| %s | %s |", sc, client)
			for _, u := range []string{"cpu-ns/msg", "p50-ns"} {
				a, ok1 := get(sc, client, u)
				b, ok2 := get(sc, raw, u)
				fmt.Printf(" %s |", ratio(a, b, ok1 && ok2))
			}
			fmt.Println()
		}
	}

	edgeUnits := []string{"MB/s", "cpu-ms/MB", "B/conn", "goroutines/conn", "B/channel", "goroutines/channel", "B/consumer", "goroutines/consumer"}
	var edges []string
	for _, sc := range scenarios {
		for _, u := range edgeUnits {
			if _, ok := get(sc, ours, u); ok {
				edges = append(edges, sc+"\x00"+u)
			}
		}
	}
	if len(edges) > 0 {
		fmt.Println()
		fmt.Println("### Large bodies and idle memory (issue #16): medians, ours against amqp091-go")
		fmt.Println()
		fmt.Println("| scenario | unit | ours | amqp091 | ours / amqp091 |")
		fmt.Println("|---|---|--:|--:|--:|")
		for _, e := range edges {
			sc, u, _ := strings.Cut(e, "\x00")
			a, ok1 := get(sc, ours, u)
			b, ok2 := get(sc, incumbent, u)
			fmt.Printf("| %s | %s | %s | %s | %s |\n", sc, u, num(a, ok1), num(b, ok2), ratio(a, b, ok1 && ok2))
		}
	}

	var peerRows []string
	for _, sc := range scenarios {
		if _, ok := get(sc, amqplib, "cpu-ns/msg"); ok {
			peerRows = append(peerRows, sc)
		}
	}
	if len(peerRows) > 0 {
		fmt.Println()
		fmt.Println("### Against amqplib (Node.js): medians, ratio client / amqplib")
		fmt.Println()
		fmt.Println("| scenario | client | cpu-ns/msg | amqplib cpu-ns/msg | CPU ratio | msgs/s | amqplib msgs/s | rate ratio |")
		fmt.Println("|---|---|--:|--:|--:|--:|--:|--:|")
		for _, sc := range peerRows {
			pc, _ := get(sc, amqplib, "cpu-ns/msg")
			pr, okr := get(sc, amqplib, "msgs/s")
			for _, client := range []string{ours, oursRecycle, incumbent, raw} {
				c, ok := get(sc, client, "cpu-ns/msg")
				if !ok {
					continue
				}
				r, ok2 := get(sc, client, "msgs/s")
				fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", sc, client, num(c, true), num(pc, true), ratio(c, pc, true),
					num(r, ok2), num(pr, okr), ratio(r, pr, ok2 && okr))
			}
		}
	}

	fmt.Println()
	fmt.Println("### Goals of issue #5")
	fmt.Println()
	fmt.Println("| goal | target | ours | amqp091 | raw floor | met |")
	fmt.Println("|---|---|--:|--:|--:|:-:|")
	type goal struct {
		name, scenario, unit, target string
		ok                           func(ours, other float64) bool
		vsRaw                        bool
		client                       string // ours unless set
	}
	le := func(limit float64) func(float64, float64) bool {
		return func(v, _ float64) bool { return v <= limit }
	}
	goals := []goal{
		{"sink publish CPU", "PublishSink", "cpu-ns/msg", "≤ 500 ns", le(500), false, ""},
		{"sink publish allocs", "PublishSink", "allocs/op", "0", le(0), false, ""},
		{"source consume CPU", "ConsumeSource", "cpu-ns/msg", "≤ 500 ns", le(500), false, ""},
		{"source consume allocs", "ConsumeSource", "allocs/op", "≤ 1", le(1), false, ""},
		{"source consume CPU, Recycle", "ConsumeSource", "cpu-ns/msg", "≤ 500 ns", le(500), false, oursRecycle},
		{"source consume allocs, Recycle", "ConsumeSource", "allocs/op", "≤ 1", le(1), false, oursRecycle},
		{"broker publish CPU, 16 B", "PublishBroker/16B", "cpu-ns/msg", "≤ 1000 ns", le(1000), false, ""},
		{"broker publish CPU, 1 KiB", "PublishBroker/1KiB", "cpu-ns/msg", "≤ 1000 ns", le(1000), false, ""},
		{"confirms CPU", "ConfirmBroker", "cpu-ns/msg", "≤ 2000 ns", le(2000), false, ""},
		{"broker consume CPU", "ConsumeBroker", "cpu-ns/msg", "≤ 2000 ns", le(2000), false, ""},
		{"broker consume CPU, Recycle", "ConsumeBroker", "cpu-ns/msg", "≤ 2000 ns", le(2000), false, oursRecycle},
		{"RPC p50, fake server", "RPC/fake", "p50-ns", "≤ 0.7 × amqp091", func(a, b float64) bool { return a <= 0.7*b }, false, ""},
		{"RPC p50, broker", "RPC/broker", "p50-ns", "≤ 0.7 × amqp091", func(a, b float64) bool { return a <= 0.7*b }, false, ""},
		{"broker throughput, 16 B", "PublishBroker/16B", "msgs/s", "≥ 0.95 × raw", func(a, r float64) bool { return a >= 0.95*r }, true, ""},
		{"broker throughput, 1 KiB", "PublishBroker/1KiB", "msgs/s", "≥ 0.95 × raw", func(a, r float64) bool { return a >= 0.95*r }, true, ""},
	}
	for _, g := range goals {
		client := ours
		if g.client != "" {
			client = g.client
		}
		a, ok := get(g.scenario, client, g.unit)
		if !ok {
			continue
		}
		b, okb := get(g.scenario, incumbent, g.unit)
		ref := b
		if g.vsRaw {
			var okr bool
			ref, okr = get(g.scenario, raw, g.unit)
			if !okr {
				continue
			}
		}
		floor, okf := get(g.scenario, raw, g.unit)
		met := "no"
		switch {
		case g.ok(a, ref):
			met = "yes"
		case okf && !g.vsRaw && !g.ok(floor, ref):
			// Not even pre-encoded frames on a bare socket, read and
			// written by one goroutine, reach the target here.
			met = "no: below the raw floor"
		}
		target := g.target
		if g.vsRaw {
			target = fmt.Sprintf("%s (raw %s)", g.target, num(ref, true))
			okf = false // the raw client is the reference, not a floor
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", g.name, target, num(a, true), num(b, okb), num(floor, okf), met)
	}
}

func num(v float64, ok bool) string {
	switch {
	case !ok:
		return "–"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 0.01 || v == 0:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 2, 64)
	}
}

func ratio(a, b float64, ok bool) string {
	if !ok {
		return "–"
	}
	if b == 0 {
		if a == 0 {
			return "0 / 0"
		}
		return "∞"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64) + "×"
}
