package quota

import (
	"testing"
	"time"
)

func TestMeter(t *testing.T) {
	var m Meter
	for range 7 {
		m.Add(t0)
	}
	if r := m.Rate(t0.Add(500 * time.Millisecond)); r != 0 {
		t.Fatalf("rate within the first second = %v, want 0 (no whole second yet)", r)
	}
	m.Add(t0.Add(time.Second))
	if r := m.Rate(t0.Add(1500 * time.Millisecond)); r != 7 {
		t.Fatalf("rate = %v, want 7", r)
	}
	if r := m.Rate(t0.Add(2 * time.Second)); r != 1 {
		t.Fatalf("rate = %v, want 1", r)
	}
	if r := m.Rate(t0.Add(10 * time.Second)); r != 0 {
		t.Fatalf("rate after a quiet spell = %v, want 0", r)
	}
}

func TestMeterInc(t *testing.T) {
	for {
		var m Meter
		s := coarseSecond()
		m.Inc()
		m.Inc()
		m.Inc()
		if coarseSecond() != s {
			continue // a second boundary fell between the events: again
		}
		if r := m.Rate(time.Unix(s+1, 0)); r != 3 {
			t.Fatalf("rate %v, want 3", r)
		}
		if d := time.Now().Unix() - s; d < 0 || d > 1 {
			t.Fatalf("coarse second %d is %d s away from the clock", s, d)
		}
		return
	}
}
