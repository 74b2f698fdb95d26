// Command amqp-conformance checks an AMQP 0-9-1 broker against the
// protocol, rule by rule, and prints a table of verdicts with totals per
// class and per level:
//
//	amqp-conformance -url amqp://guest:guest@localhost:5672/ [-run REGEXP] [-vhost VHOST]
//	                 [-json FILE|-] [-junit FILE] [-verdicts] [-timeout 2m] [-parallel 4]
//	                 [-restart-cmd CMD] [-alarm-cmd CMD]
//
// Each rule of the specification's XML, of its general part (framing,
// channel 0, heartbeats, negotiation) and of RabbitMQ's extensions gets
// PASS, FAIL (with what the broker did instead), DEVIATION (a failure the
// broker's own documentation owns up to) or SKIP (with why). Checks clean up
// the queues and exchanges they declare. On a terminal, progress is shown as
// checks finish. The exit status is 1 when a check failed, 2 on bad usage.
//
// The rules about restarts (durable queues and bindings, persistent
// messages) and about resource alarms (connection.blocked, overflow) are
// skipped unless -restart-cmd and -alarm-cmd give the means, for a broker of
// your own: for example, with a local node,
//
//	-restart-cmd 'rabbitmqctl stop_app && rabbitmqctl start_app'
//	-alarm-cmd 'if [ "$1" = on ]; then w=0.0000001; else w=0.4; fi; rabbitmqctl set_vm_memory_high_watermark $w'
//
// Never give them for a broker that others use.
//
// See package github.com/amqp-go/amqp/conformance for the suite itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"time"

	"github.com/amqp-go/amqp/conformance"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("amqp-conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "amqp://guest:guest@localhost:5672/", "broker URL (amqp:// or amqps://)")
	vhost := fs.String("vhost", "", "virtual host to test (replaces the URL's)")
	runRe := fs.String("run", "", "check only the rules whose ID matches this regular expression")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file (- for standard output, instead of the table)")
	junitOut := fs.String("junit", "", "also write the report as JUnit XML to this file")
	timeout := fs.Duration("timeout", 2*time.Minute, "bound on the whole run")
	parallel := fs.Int("parallel", 4, "checks run at once")
	verdicts := fs.Bool("verdicts", false, "print only one \"VERDICT rule\" line per rule (the golden-file format)")
	restartCmd := fs.String("restart-cmd", "", "shell command that restarts the broker keeping its data (enables the restart rules; never for a shared broker)")
	alarmCmd := fs.String("alarm-cmd", "", "shell command that raises a resource alarm when given \"on\" and clears it when given \"off\" as $1 (enables the alarm rules; never for a shared broker)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	opts := conformance.Options{URL: *url, Vhost: *vhost, Timeout: *timeout, Parallel: *parallel}
	if *restartCmd != "" {
		opts.Restart = func(ctx context.Context) error { return shell(ctx, stderr, *restartCmd) }
	}
	if *alarmCmd != "" {
		opts.RaiseAlarm = func(ctx context.Context) error { return shell(ctx, stderr, *alarmCmd, "on") }
		opts.ClearAlarm = func(ctx context.Context) error { return shell(ctx, stderr, *alarmCmd, "off") }
	}
	if *runRe != "" {
		re, err := regexp.Compile(*runRe)
		if err != nil {
			fmt.Fprintln(stderr, "amqp-conformance: -run:", err)
			return 2
		}
		opts.Run = re
	}
	if isTerminal(stderr) {
		done := 0
		opts.Progress = func(r conformance.Result) {
			done++
			fmt.Fprintf(stderr, "\r\033[K%4d  %-9s %s", done, r.Verdict, r.Rule.ID)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := conformance.Run(ctx, opts)
	if opts.Progress != nil {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if err != nil {
		fmt.Fprintln(stderr, "amqp-conformance:", err)
		return 2
	}
	switch {
	case *verdicts:
		_, err = io.WriteString(stdout, rep.Verdicts())
	case *jsonOut == "-":
		err = rep.WriteJSON(stdout)
	default:
		err = rep.WriteTable(stdout)
	}
	if err == nil && *jsonOut != "" && *jsonOut != "-" {
		err = writeFile(*jsonOut, rep.WriteJSON)
	}
	if err == nil && *junitOut != "" {
		err = writeFile(*junitOut, rep.WriteJUnit)
	}
	if err != nil {
		fmt.Fprintln(stderr, "amqp-conformance:", err)
		return 2
	}
	if rep.Count(conformance.Fail) > 0 {
		return 1
	}
	return 0
}

// shell runs cmd with sh -c, args as $1..., its output to w.
func shell(ctx context.Context, w io.Writer, cmd string, args ...string) error {
	c := exec.CommandContext(ctx, "sh", append([]string{"-c", cmd, "sh"}, args...)...)
	c.Stdout, c.Stderr = w, w
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return nil
}

func writeFile(name string, write func(io.Writer) error) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
