package node_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/evchat/evchat/cmd/internal/node"
)

// notRoleNames are the string literals, outside the table, that spell a
// role's name but mean something else, by file (from the module's root)
// and why. Anything else that spells a role's name fails
// TestRoleNamesOnlyInTable.
var notRoleNames = map[string]map[string]string{
	"domain/events.go": {
		"inbox": "an output's name on the epochs topic (schemas/events), not the role", "presence": "the same",
	},
	"gateway/ws/frames.go":         {"presence": "the presence frame's type (schemas/frames)"},
	"gateway/api/api.go":           {"presence": "a JSON field of GET /v1/presence (schemas/openapi.yaml)"},
	"projections/store/metered.go": {"inbox": "the store operation's metric label"},
	"projections/push/push.go":     {"push": "a log message"},
	// The stores' ResetProjection tables: which tables a projection
	// alone writes is the store's schema. They cannot import the
	// projection packages (those import store); the contract suite
	// (storetest/reset.go) holds both stores to the same keys.
	"projections/store/pebblestore/store.go": {"history": "reset tables", "inbox": "reset tables", "cursors": "reset tables"},
	"projections/store/cassandra/reset.go":   {"history": "reset tables", "inbox": "reset tables", "cursors": "reset tables"},
}

// TestRoleNamesOnlyInTable fails when a role's name (or an epoch of it,
// "inbox.e2") is written as a string literal in the module's Go code
// outside the places that define it: Table (table.go), each projection
// package's Name constant (Table refers to it), and notRoleNames. Code
// that needs a role's name takes it from there. Test files (and the
// stores' contract suite) are not searched: they name roles as an
// operator would, or as fixtures.
func TestRoleNamesOnlyInTable(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	names := node.RoleNames()
	epoched := regexp.MustCompile(`^(` + strings.Join(names, "|") + `)\.e[0-9]+$`)
	fset := token.NewFileSet()
	searched := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		// storetest is test code outside _test.go files: the stores'
		// contract suite, whose fixtures name projections as the reset
		// tables key them.
		if rel == "cmd/internal/node/table.go" || strings.HasPrefix(rel, "projections/store/storetest/") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		searched++
		allowed := map[*ast.BasicLit]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.Field: // struct tags name JSON fields
				if n.Tag != nil {
					allowed[n.Tag] = true
				}
			case *ast.ValueSpec: // a projection package's const Name = "<package>"
				for i, id := range n.Names {
					if lit, ok := valueAt(n, i).(*ast.BasicLit); ok && id.Name == "Name" && unquote(lit) == f.Name.Name {
						allowed[lit] = true
					}
				}
			}
			return true
		})
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING || allowed[lit] {
				return true
			}
			s := unquote(lit)
			if !slices.Contains(names, s) && !epoched.MatchString(s) {
				return true
			}
			if _, ok := notRoleNames[rel][s]; ok {
				return true
			}
			t.Errorf("%s: the role name %q is written outside the table (cmd/internal/node/table.go): use the projection's Name constant or the table", fset.Position(lit.Pos()), s)
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if searched < 50 {
		t.Fatalf("searched %d Go files: the walk missed the module", searched)
	}
}

func valueAt(v *ast.ValueSpec, i int) ast.Expr {
	if i < len(v.Values) {
		return v.Values[i]
	}
	return nil
}

func unquote(lit *ast.BasicLit) string {
	s, err := strconv.Unquote(lit.Value)
	if err != nil {
		return lit.Value
	}
	return s
}
