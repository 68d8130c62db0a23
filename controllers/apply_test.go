package controllers

import "testing"

// TestContains pins the drift comparison: what the operator set must still
// be there; what others added is ignored, except in lists of plain values.
func TestContains(t *testing.T) {
	for _, tc := range []struct {
		name       string
		have, want any
		ok         bool
	}{
		{"equal scalars", "a", "a", true},
		{"numbers of other Go types", int64(3), 3, true},
		{"float and int", float64(3), int64(3), true},
		{"different numbers", int64(3), int64(4), false},
		{"number against string", "3", int64(3), false},
		{"extra keys are ignored", map[string]any{"a": "1", "b": "2"}, map[string]any{"a": "1"}, true},
		{"missing key", map[string]any{"b": "2"}, map[string]any{"a": "1"}, false},
		{"changed value", map[string]any{"a": "2"}, map[string]any{"a": "1"}, false},
		{"map against scalar", "x", map[string]any{"a": "1"}, false},
		{"list of objects with an extra entry", []any{map[string]any{"n": "a"}, map[string]any{"n": "x"}, map[string]any{"n": "b"}},
			[]any{map[string]any{"n": "a"}, map[string]any{"n": "b"}}, true},
		{"list of objects missing an entry", []any{map[string]any{"n": "a"}}, []any{map[string]any{"n": "a"}, map[string]any{"n": "b"}}, false},
		{"list of objects reordered", []any{map[string]any{"n": "b"}, map[string]any{"n": "a"}},
			[]any{map[string]any{"n": "a"}, map[string]any{"n": "b"}}, false},
		{"list of values with an extra entry", []any{"a", "x"}, []any{"a"}, false},
		{"equal lists of values", []any{"a", "b"}, []any{"a", "b"}, true},
		{"empty wanted map", map[string]any{"x": "1"}, map[string]any{}, true},
	} {
		if got := contains(tc.have, tc.want); got != tc.ok {
			t.Errorf("%s: contains(%v, %v) = %v, want %v", tc.name, tc.have, tc.want, got, tc.ok)
		}
	}
}
