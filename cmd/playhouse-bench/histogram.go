package main

import (
	"math"
	"time"
)

// histogram records latencies in logarithmic buckets (about 2% wide) from
// 1µs to 100s, so memory stays fixed however long the run.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	histBuckets = 1000
	histMin     = float64(time.Microsecond)
	histGrowth  = 1.02
)

var histLogGrowth = math.Log(histGrowth)

func bucketOf(d time.Duration) int {
	if float64(d) <= histMin {
		return 0
	}
	i := int(math.Log(float64(d)/histMin) / histLogGrowth)
	return min(i, histBuckets-1)
}

// record adds one latency.
func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	h.max = max(h.max, d)
}

// merge adds o's counts to h.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the upper bound of the bucket holding quantile q (0..1).
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank && c > 0 {
			upper := time.Duration(histMin * math.Pow(histGrowth, float64(i+1)))
			return min(upper, h.max)
		}
	}
	return h.max
}
