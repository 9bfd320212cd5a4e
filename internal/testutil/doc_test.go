package testutil

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs fails on any package of the module without a doc comment: "Package x
// ..." for a library, any doc comment for a command (package main).
func TestPackageDocs(t *testing.T) {
	root := moduleRoot(t)
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != root {
			// Directories the go command ignores, and nested modules.
			name := d.Name()
			if name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir
			}
		}
		if checkPackageDoc(t, root, path) {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no package found under %s", root)
	}
}

// checkPackageDoc checks the package of the non-test Go files in dir and reports whether
// there is one.
func checkPackageDoc(t *testing.T, root, dir string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(root, dir)
	var pkg string
	documented := false
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return true
		}
		pkg = f.Name.Name
		if f.Doc == nil {
			continue
		}
		if w := strings.Fields(f.Doc.Text()); pkg == "main" || len(w) >= 2 && w[0] == "Package" && w[1] == pkg {
			documented = true
		}
	}
	switch {
	case pkg == "": // no package here, or tests only
		return false
	case documented:
	case pkg == "main":
		t.Errorf("%s: command has no doc comment (// Command ... on its package clause)", rel)
	default:
		t.Errorf("%s: package %s has no doc comment (// Package %s ...)", rel, pkg, pkg)
	}
	return true
}

// moduleRoot walks up from the working directory to the directory holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}
