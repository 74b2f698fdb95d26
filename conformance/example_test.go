package conformance_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/amqp-go/amqp/conformance"
)

// Check a broker against a few rules and print each verdict.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := "amqp://guest:guest@127.0.0.1:5672/"
	if u := os.Getenv("AMQP_URL"); u != "" {
		url = u
	}
	rep, err := conformance.Run(ctx, conformance.Options{
		URL: url,
		Run: regexp.MustCompile(`^(queue\.declare\.passive/passive|exchange\.delete\.exchange/exists|basic/01)$`),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, res := range rep.Results {
		fmt.Println(res.Verdict, res.Rule.Level, res.Rule.ID)
	}
	// Output:
	// DEVIATION MUST exchange.delete.exchange/exists
	// PASS MAY queue.declare.passive/passive
	// SKIP SHOULD basic/01
}
