//go:build !unix

package brokertest

import (
	"errors"
	"os/exec"
	"time"
)

// RabbitMQ's scripts are shell scripts: nodes are started on Unix only.

func detach(*exec.Cmd) {}

func processAlive(int) bool { return false }

func killProcess(int, time.Duration) error {
	return errors.New("brokertest: killing a node is implemented on Unix only")
}

func terminateProcess(int, time.Duration) error {
	return errors.New("brokertest: stopping a node is implemented on Unix only")
}
