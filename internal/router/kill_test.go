package router

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

// The child half of TestKill9KeepsAcknowledged: it publishes to a queue as
// fast as it can and prints the number of each message once the router
// acknowledged it, until it is killed.
func TestKillChild(t *testing.T) {
	dir := os.Getenv("THRONG_KILL_CHILD_DIR")
	if dir == "" {
		t.Skip("child process of TestKill9KeepsAcknowledged")
	}
	e := start(t, dir)
	mustAddr(t, e.r, "default", &address.Address{Name: "orders", Type: address.Queue})
	p, err := e.r.Producer(context.Background(), "default", "orders")
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewWriter(os.Stdout)
	acks := make(chan int, 1024)
	sem := make(chan struct{}, 256)
	go func() {
		for i := 0; ; i++ {
			sem <- struct{}{}
			n := i
			p.Publish(&message.Message{Body: []byte(strconv.Itoa(n)), Durable: true}, func(o Outcome, err error) {
				<-sem
				if err == nil && o.Kind == Accepted {
					acks <- n
				}
			})
		}
	}()
	for n := range acks {
		fmt.Fprintf(out, "ack %d\n", n)
		if len(acks) == 0 {
			out.Flush()
		}
	}
}

// TestKill9KeepsAcknowledged kills a process that is publishing under load
// and checks that every message it saw acknowledged is in the queue after
// a restart on the same data directory.
func TestKill9KeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.v")
	cmd.Env = append(os.Environ(), "THRONG_KILL_CHILD_DIR="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[int]bool{}
	sc := bufio.NewScanner(stdout)
	var lines atomic.Int64
	deadline := time.Now().Add(60 * time.Second)
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
			v, _ := strconv.Atoi(n)
			acked[v] = true
			if lines.Add(1) == 3000 || time.Now().After(deadline) {
				break
			}
		}
	}
	// Kill while it is still publishing.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() { // acknowledgements printed before the kill landed
		if n, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
			v, _ := strconv.Atoi(n)
			acked[v] = true
		}
	}
	_ = cmd.Wait()
	if len(acked) < 1000 {
		t.Fatalf("child acknowledged only %d messages", len(acked))
	}

	e := start(t, dir)
	c, col := consume(t, e.r, "default", "orders", ConsumeOptions{}, 1<<20)
	defer c.Close()
	found := map[int]bool{}
	for {
		select {
		case d := <-col.ch:
			v, _ := strconv.Atoi(string(d.Message.Body))
			found[v] = true
			continue
		case <-time.After(2 * time.Second):
		}
		break
	}
	missing := 0
	for n := range acked {
		if !found[n] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged messages lost after kill -9 (found %d)", missing, len(acked), len(found))
	}
	t.Logf("%d acknowledged, %d found after kill -9", len(acked), len(found))
}
