package amqp_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

// Every runnable example is listed by task in README.md, and the package's
// own ones in the package documentation (doc.go), by the identifier they
// are shown with: a newcomer finds them without opening example_test.go.
func TestEveryExampleIsListedInREADMEAndPackageDocs(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	docFile, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	require.NoError(t, err)
	pkgDoc := strings.Join(strings.Fields(docFile.Doc.Text()), " ")
	found := 0
	for _, dir := range []string{".", "amqptest", "amqpraw", "conformance", "layer", "otelamqp"} {
		files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
		require.NoError(t, err)
		for _, file := range files {
			f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
			require.NoError(t, err)
			for _, decl := range f.Decls {
				fd, ok := decl.(*ast.FuncDecl)
				if !ok || fd.Recv != nil || !strings.HasPrefix(fd.Name.Name, "Example") {
					continue
				}
				found++
				name := fd.Name.Name
				listed := "`" + name + "`"
				if dir != "." {
					listed += " in `" + filepath.ToSlash(file) + "`"
				}
				require.True(t, strings.Contains(string(readme), listed), "README.md does not list %s", listed)
				if dir != "." {
					continue
				}
				ident, suffix := exampleTarget(name)
				want := "example of [" + ident + "]"
				if suffix != "" {
					want = `"` + suffix + `" ` + want
				}
				require.True(t, strings.Contains(pkgDoc, want), "doc.go does not list %s as %s", name, want)
			}
		}
	}
	require.Greater(t, found, 10, "the examples were found")
}

// exampleTarget splits an example's name, such as
// ExampleChannel_Consume_workQueue, into what it is shown with
// (Channel.Consume) and its suffix (workQueue).
func exampleTarget(name string) (ident, suffix string) {
	parts := strings.Split(strings.TrimPrefix(name, "Example"), "_")
	if last := parts[len(parts)-1]; len(parts) > 1 && unicode.IsLower(rune(last[0])) {
		suffix, parts = last, parts[:len(parts)-1]
	}
	return strings.Join(parts, "."), suffix
}
