package conformance

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
)

// Options configure a run of the suite.
type Options struct {
	// URL is the broker's amqp:// or amqps:// URL (credentials, vhost, TLS
	// files as amqp.ParseURL reads them).
	URL string

	// Vhost, when set, replaces the URL's virtual host.
	Vhost string

	// Run, when set, selects the rules whose ID it matches.
	Run *regexp.Regexp

	// Timeout bounds the whole run; zero means 2 minutes. Checks still
	// waiting when it ends fail with what they were waiting for.
	Timeout time.Duration

	// CheckTimeout bounds each check; zero means 20 s.
	CheckTimeout time.Duration

	// ReplyTimeout bounds each reply a check waits for; zero means 5 s.
	ReplyTimeout time.Duration

	// QuietPeriod is how long a check waits to be sure that nothing comes
	// (a message that must not be delivered); zero means 1 s.
	QuietPeriod time.Duration

	// Parallel is how many checks run at once; zero means 4.
	Parallel int

	// Progress, when set, is called with each result as it comes, from
	// one goroutine at a time.
	Progress func(Result)

	// Restart, when set, restarts the broker and returns once it accepts
	// connections again, its durable queues, exchanges, bindings and
	// persistent messages kept (rabbitmqctl stop_app and start_app). The
	// checks of the rules about restarts are skipped without it. Never
	// give it for a broker others use.
	Restart func(ctx context.Context) error

	// RaiseAlarm and ClearAlarm, when both are set, raise and clear a
	// resource alarm that blocks publishers (rabbitmqctl
	// set_vm_memory_high_watermark). The checks of connection.blocked and
	// of overflow are skipped without them. Never give them for a broker
	// others use.
	RaiseAlarm, ClearAlarm func(ctx context.Context) error
}

func (o *Options) defaults() {
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.CheckTimeout == 0 {
		o.CheckTimeout = 20 * time.Second
	}
	if o.ReplyTimeout == 0 {
		o.ReplyTimeout = 5 * time.Second
	}
	if o.QuietPeriod == 0 {
		o.QuietPeriod = time.Second
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
}

// runner is one run's shared state.
type runner struct {
	opts      Options
	addr      string
	tls       *tls.Config
	handshake amqpraw.Handshake
	prefix    string // unique to the run: names of queues and exchanges
	rabbitmq  bool   // the broker says it is RabbitMQ: its documented deviations apply
	restarts  *restartBarrier
}

// Run runs the checks of every rule that opts.Run selects and returns the
// report. Rules without a check get a SKIP that says why. It returns an
// error only for options it cannot use; a broker that cannot be reached
// makes every check FAIL.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts.defaults()
	cfg, err := amqp.ParseURL(opts.URL)
	if err != nil {
		return nil, err
	}
	r := &runner{opts: opts, tls: cfg.TLS, prefix: fmt.Sprintf("amqp-conformance.%08x", rand.Uint32())}
	r.addr = "localhost:5672"
	if cfg.TLS != nil {
		r.addr = "localhost:5671"
	}
	if len(cfg.Addrs) > 0 {
		r.addr = cfg.Addrs[0]
	}
	r.handshake = amqpraw.Handshake{Username: cfg.Username, Password: cfg.Password, Vhost: cfg.Vhost}
	if opts.Vhost != "" {
		r.handshake.Vhost = opts.Vhost
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	rep := &Report{URL: redact(opts.URL), Vhost: first(r.handshake.Vhost, "/"), Started: time.Now()}
	rep.Broker, r.rabbitmq = r.probe(ctx)

	var rules []Rule
	for _, rule := range AllRules() {
		if opts.Run == nil || opts.Run.MatchString(rule.ID) {
			rules = append(rules, rule)
		}
	}
	results := make([]Result, len(rules))
	var (
		wg         sync.WaitGroup
		progressMu sync.Mutex
		next       = make(chan int)
	)
	runOne := func(i int) {
		results[i] = r.runOne(ctx, &rules[i])
		if opts.Progress != nil {
			progressMu.Lock()
			opts.Progress(results[i])
			progressMu.Unlock()
		}
	}
	for range opts.Parallel {
		wg.Go(func() {
			for i := range next {
				runOne(i)
			}
		})
	}
	// Checks that restart or block the broker run after the rest: those
	// that restart it together, sharing one restart; the others one at a
	// time.
	var restarting, alone []int
	for i := range rules {
		c := lookup(rules[i].ID)
		switch {
		case c == nil || c.needs == needsNothing || !r.hasHook(c.needs):
			next <- i
		case c.needs == needsRestart:
			restarting = append(restarting, i)
		default:
			alone = append(alone, i)
		}
	}
	close(next)
	wg.Wait()
	r.restarts = &restartBarrier{restart: opts.Restart, ctx: ctx, pending: len(restarting)}
	for _, i := range restarting {
		wg.Go(func() { runOne(i) })
	}
	wg.Wait()
	for _, i := range alone {
		runOne(i)
	}
	rep.Results = results
	rep.Duration = time.Since(rep.Started)
	return rep, nil
}

// probe opens one connection to learn the broker's product and version.
func (r *runner) probe(ctx context.Context) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.ReplyTimeout)
	defer cancel()
	s, err := amqpraw.Dial(ctx, r.addr, amqpraw.Options{TLS: r.tls, Handshake: r.handshake})
	if err != nil {
		return fmt.Sprintf("unreachable (%v)", err), false
	}
	defer s.Close()
	if err := s.Handshake(ctx, amqpraw.Handshake{}); err != nil {
		return fmt.Sprintf("handshake failed (%v)", err), false
	}
	closePolitely(ctx, s)
	product, _ := s.Start.ServerProperties["product"].(string)
	version, _ := s.Start.ServerProperties["version"].(string)
	return product + " " + version, product == "RabbitMQ"
}

// runOne runs the check of one rule, cleans up after it and judges it.
func (r *runner) runOne(ctx context.Context, rule *Rule) Result {
	res := Result{Rule: *rule, RabbitMQ: rabbitmqStatus[rule.ID].Status}
	c := lookup(rule.ID)
	if c != nil && !r.hasHook(c.needs) {
		res.Verdict, res.Detail = Skip, needReasons[c.needs]
		return res
	}
	if c == nil {
		res.Verdict, res.Detail = Skip, unchecked[rule.ID]
		if res.Detail == "" {
			res.Detail = "no check yet"
		}
		return res
	}
	timeout := c.timeout
	if timeout == 0 {
		timeout = r.opts.CheckTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := &T{ctx: cctx, run: r, rule: rule}
	start := time.Now()
	r.execute(t, c)
	if c.needs == needsRestart && !t.restarted {
		r.restarts.leave()
	}
	res.Duration = time.Since(start)

	received := 0
	for _, s := range t.sessions {
		received += s.Received()
		if t.verdict != Pass && t.verdict != Skip {
			res.Transcript = append(res.Transcript, s.Transcript()...)
		}
	}
	r.cleanup(ctx, t)
	res.Declared = declared(t)
	res.Verdict, res.Detail = t.verdict, t.detail
	if res.Verdict == Pass && received == 0 {
		// A PASS must rest on what the broker said.
		res.Verdict, res.Detail = Fail, "the check passed without a frame from the broker: "+res.Detail
	}
	if res.Verdict == Fail && r.rabbitmq {
		if d := rabbitmqStatus[rule.ID]; d.Deviation != "" {
			res.Verdict, res.Note = Deviation, d.Deviation
		}
	}
	return res
}

func lookup(ruleID string) *check {
	registryMu.Lock()
	defer registryMu.Unlock()
	return registry[ruleID]
}

// needReasons say why a check that needs a hook was skipped.
var needReasons = map[need]string{
	needsRestart: "needs a broker restart: run against a broker of your own with Options.Restart (amqp-conformance -restart-cmd); the suite never restarts a broker it was not given the means to",
	needsAlarm:   "needs a resource alarm that blocks every publisher of the broker: run against a broker of your own with Options.RaiseAlarm and ClearAlarm (amqp-conformance -alarm-cmd)",
}

func (r *runner) hasHook(n need) bool {
	switch n {
	case needsRestart:
		return r.opts.Restart != nil
	case needsAlarm:
		return r.opts.RaiseAlarm != nil && r.opts.ClearAlarm != nil
	}
	return true
}

// execute runs the check, turning its end (and any panic) into a verdict.
func (r *runner) execute(t *T, c *check) {
	defer func() {
		switch p := recover(); {
		case p == nil:
			if t.verdict == "" {
				t.verdict, t.detail = Fail, "the check ended without a verdict (a bug in the suite)"
			}
		case p == errEnd:
		default:
			if err, ok := p.(error); ok && errors.Is(err, errEnd) {
				return
			}
			t.verdict, t.detail = Fail, fmt.Sprintf("the check panicked (a bug in the suite): %v\n%s", p, debug.Stack())
		}
	}()
	c.run(t)
}

// cleanup closes the check's sessions and deletes what it declared.
func (r *runner) cleanup(ctx context.Context, t *T) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*r.opts.ReplyTimeout)
	defer cancel()
	for _, s := range t.sessions {
		closePolitely(ctx, s)
	}
	if len(t.queues)+len(t.exchs) == 0 {
		return
	}
	s, err := amqpraw.Dial(ctx, r.addr, amqpraw.Options{TLS: r.tls, Handshake: r.handshake})
	if err != nil {
		return
	}
	defer s.Close()
	if s.Handshake(ctx, amqpraw.Handshake{}) != nil || s.OpenChannel(ctx, 1) != nil {
		return
	}
	del := func(m amqp.Method) {
		if s.Send(ctx, 1, m) != nil {
			return
		}
		cmd, err := s.ReadCommand(ctx)
		if err != nil {
			return
		}
		if _, closed := cmd.Method.(*amqp.ChannelClose); closed {
			// A broker whose delete of nothing is an error: reopen.
			if s.Send(ctx, 1, &amqp.ChannelCloseOk{}) == nil {
				_ = s.OpenChannel(ctx, 1)
			}
		}
	}
	seen := map[string]bool{}
	for _, q := range t.queues {
		if q != "" && !seen[q] {
			seen[q] = true
			del(&amqp.QueueDelete{Queue: q})
		}
	}
	for _, x := range t.exchs {
		del(&amqp.ExchangeDelete{Exchange: x})
	}
	closePolitely(ctx, s)
}

// declared returns the names t declared, sorted, each once.
func declared(t *T) []string {
	names := slices.Concat(t.queues, t.exchs)
	slices.Sort(names)
	return slices.DeleteFunc(slices.Compact(names), func(n string) bool { return n == "" })
}

// closePolitely closes the connection with the closing handshake when it
// is still open, briefly, then the socket.
func closePolitely(ctx context.Context, s *amqpraw.Session) {
	defer s.Close()
	if s.Start == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if s.Send(ctx, 0, &amqp.ConnectionClose{ReplyCode: amqp.CodeSuccess, ReplyText: "conformance check done"}) != nil {
		return
	}
	for {
		cmd, err := s.ReadCommand(ctx)
		if err != nil {
			return
		}
		if _, ok := cmd.Method.(*amqp.ConnectionCloseOk); ok {
			return
		}
	}
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
