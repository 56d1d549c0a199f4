package auth_test

import (
	"strings"
	"testing"

	"github.com/regcache/regcache/auth"
)

func TestRulesMatch(t *testing.T) {
	t.Parallel()
	r, err := auth.NewRules([]auth.AccessRule{
		{Repository: "*", Pull: []string{"*"}},
		{Repository: "lab/*", Push: []string{"alice"}},
		{Repository: "lab/team/*", Pull: []string{"bob"}},
		{Repository: "lab/team/open", AnonymousPull: true},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	alice, bob, anon := auth.Identity{Name: "alice"}, auth.Identity{Name: "bob"}, auth.Identity{}
	for _, tc := range []struct {
		id     auth.Identity
		repo   string
		action string
		want   bool
	}{
		{bob, "ubuntu", "pull", true},        // "*"
		{bob, "ubuntu", "push", false},       // nobody pushes under "*"
		{anon, "ubuntu", "pull", false},      // "*" is every user, not anonymous
		{alice, "lab/app", "pull", true},     // push implies pull
		{alice, "lab/app", "push", true},     // prefix
		{bob, "lab/app", "pull", false},      // lab/* wins over "*"
		{alice, "lab/team/x", "pull", false}, // the longest prefix wins
		{bob, "lab/team/x", "pull", true},
		{bob, "lab/team", "pull", false},       // lab/team/* does not cover lab/team
		{anon, "lab/team/open", "pull", true},  // exact
		{alice, "lab/team/open", "pull", true}, // anyone may do what anonymous may
		{alice, "lab/app", "delete", false},
	} {
		if got := r.Allows(tc.id, tc.repo, tc.action); got != tc.want {
			t.Errorf("%v %s %s: %v; want %v", tc.id, tc.action, tc.repo, got, tc.want)
		}
	}
	if r.MayList(bob) {
		t.Errorf("catalog: with rules configured and no catalog list, nobody lists")
	}
	def, _ := auth.NewRules(nil, nil)
	if !def.Allows(bob, "any/repo", "push") || !def.MayList(bob) || def.Allows(anon, "any/repo", "pull") {
		t.Errorf("defaults: every user pulls, pushes and lists; anonymous nothing")
	}
}

// Invalid rules are refused naming the field, the value and what is
// accepted.
func TestRulesValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rules   []auth.AccessRule
		catalog []string
		want    string
	}{
		{[]auth.AccessRule{{Repository: "Lab/*"}}, nil, `access[0].repository "Lab/*": want a repository name (lab/app), a prefix ending in /* (lab/*), or * for every repository`},
		{[]auth.AccessRule{{Repository: "lab*"}}, nil, `access[0].repository "lab*"`},
		{[]auth.AccessRule{{Repository: ""}}, nil, `access[0].repository ""`},
		{[]auth.AccessRule{{Repository: "a"}, {Repository: "a"}}, nil, `access[1].repository "a": access[0] has the same repository`},
		{[]auth.AccessRule{{Repository: "a", Push: []string{"ok", "two words"}}}, nil, `access[0].push[1] "two words": want a user name of the htpasswd file, or * for every user`},
		{[]auth.AccessRule{{Repository: "a", Pull: []string{""}}}, nil, `access[0].pull[0] ""`},
		{nil, []string{"a*"}, `catalog[0] "a*"`},
	} {
		_, err := auth.NewRules(tc.rules, tc.catalog)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want %q", tc.rules, err, tc.want)
		}
	}
}
