package quota

import (
	"sync"
	"testing"
)

func TestConnsLimitRacing(t *testing.T) {
	var c Conns
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.Acquire("a", 7) {
				mu.Lock()
				got++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if got != 7 || c.Count("a") != 7 {
		t.Fatalf("acquired %d (count %d) of 50 racing for 7 places", got, c.Count("a"))
	}
	if !c.Acquire("b", 1) {
		t.Fatal("another tenant is refused")
	}
	c.Release("a")
	if !c.Acquire("a", 7) || c.Acquire("a", 7) {
		t.Fatal("a released place is not given exactly once")
	}
	if !c.Acquire("a", 0) {
		t.Fatal("limit 0 must be unlimited")
	}
}
