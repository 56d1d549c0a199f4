package main

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxKeyDepth bounds how deep checkKeys follows the document (aliases may
// point back up the tree).
const maxKeyDepth = 32

// checkKeys walks the YAML node beside the Go type it will be decoded into
// and refuses the first mapping key that names no field: it says on which
// line, where in the document, which known key is close, and which keys are
// accepted there. yaml.v3's own check (KnownFields) names Go types instead
// ("field rulez not found in type main.Config"), which means nothing to an
// operator. where is the path of n in the document ("" for the top level,
// "rules[1]", "vault").
func checkKeys(n *yaml.Node, t reflect.Type, where string) error {
	return checkKeysDepth(n, t, where, 0)
}

func checkKeysDepth(n *yaml.Node, t reflect.Type, where string, depth int) error {
	if n == nil || depth > maxKeyDepth {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := checkKeysDepth(c, t, where, depth+1); err != nil {
				return err
			}
		}
		return nil
	case yaml.AliasNode:
		return checkKeysDepth(n.Alias, t, where, depth+1)
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // the decoder reports the mismatch
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Tag == "!!merge" { // "<<: *defaults": the merged mappings hold keys of t
				merged := []*yaml.Node{v}
				if v.Kind == yaml.SequenceNode {
					merged = v.Content
				}
				for _, m := range merged {
					if err := checkKeysDepth(m, t, where, depth+1); err != nil {
						return err
					}
				}
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				return unknownKey(k, where, fields)
			}
			if err := checkKeysDepth(v, ft, joinPath(where, k.Value), depth+1); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		for i, c := range n.Content {
			if err := checkKeysDepth(c, t.Elem(), fmt.Sprintf("%s[%d]", where, i), depth+1); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkKeysDepth(n.Content[i+1], t.Elem(), joinPath(where, n.Content[i].Value), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func joinPath(where, key string) string {
	if where == "" {
		return key
	}
	return where + "." + key
}

// yamlFields maps the keys a struct accepts to their types, as yaml.v3
// names them: the yaml tag's name, else the lower-cased field name;
// "-" fields are not keys, ",inline" structs add theirs.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-":
			continue
		case slices.Contains(strings.Split(opts, ","), "inline"):
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range yamlFields(ft) {
					fields[k] = v
				}
			}
			continue
		case name == "":
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
	}
	return fields
}

// unknownKey is the error for key k, which none of fields matches.
func unknownKey(k *yaml.Node, where string, fields map[string]reflect.Type) error {
	accepted := slices.Sorted(func(yield func(string) bool) {
		for name := range fields {
			if !yield(name) {
				return
			}
		}
	})
	place := "at the top level"
	if where != "" {
		place = "in " + where
	}
	hint := ""
	if s := closest(k.Value, accepted); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	}
	return fmt.Errorf("line %d: unknown key %q %s%s; accepted keys: %s", k.Line, k.Value, place, hint, strings.Join(accepted, ", "))
}

// closest returns the candidate that key most likely misspells: equal but
// for case, or at most two edits away; "" when none or several are.
func closest(key string, candidates []string) string {
	best, bestDist, ties := "", 3, 0
	for _, c := range candidates {
		d := editDistance(strings.ToLower(key), strings.ToLower(c))
		switch {
		case d < bestDist:
			best, bestDist, ties = c, d, 0
		case d == bestDist:
			ties++
		}
	}
	if ties > 0 {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
