// Command kindconsts writes string constants of a Go package's files, each into a file of its
// own, as the Go compiler evaluates them (so `"a" + name + "b"` comes out whole).
//
//	kindconsts -out DIR FILE.go... -- NAME...
//
// scripts/tools/kind.sh runs it on kind's pkg/build/nodeimage/const_*.go: `kind build
// node-image` writes defaultCNIManifest and defaultStorageManifest into the node image under
// /kind/manifests/ and pulls the images they name; Journey's node image (scripts/kind-node.sh)
// does the same offline, and must use exactly these texts and names.
package main

import (
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
)

func main() {
	out := flag.String("out", "", "directory to write one file per constant into")
	flag.Parse()
	files, names, err := split(flag.Args())
	if err == nil && *out == "" {
		err = errors.New("-out is required")
	}
	if err == nil {
		err = run(*out, files, names)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kindconsts: %v\nusage: kindconsts -out DIR FILE.go... -- NAME...\n", err)
		os.Exit(1)
	}
}

// split parses `FILE... -- NAME...`.
func split(args []string) (files, names []string, err error) {
	for i, a := range args {
		if a == "--" {
			files, names = args[:i], args[i+1:]
			if len(files) == 0 || len(names) == 0 {
				return nil, nil, errors.New("need at least one file and one name")
			}
			return files, names, nil
		}
	}
	return nil, nil, errors.New("missing -- between the files and the names")
}

func run(out string, paths, names []string) error {
	fset := token.NewFileSet()
	var files []*ast.File
	for _, p := range paths {
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", p, err)
		}
		files = append(files, f)
	}
	// The constant files import nothing; an importer is not needed.
	conf := types.Config{Error: func(error) {}}
	pkg, err := conf.Check(files[0].Name.Name, fset, files, nil)
	if pkg == nil {
		return fmt.Errorf("type-checking %v: %w", paths, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, name := range names {
		obj, ok := pkg.Scope().Lookup(name).(*types.Const)
		if !ok {
			return fmt.Errorf("no constant %s in %v", name, paths)
		}
		if obj.Val().Kind() != constant.String {
			return fmt.Errorf("%s is not a string constant", name)
		}
		path := filepath.Join(out, name)
		if err := os.WriteFile(path, []byte(constant.StringVal(obj.Val())), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}
