package graph

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"strings"
)

//go:embed page.html
var pageHTML string

// page is page.html with the drawing's stylesheet and layout constants filled in, so
// that the page and graph.svg draw alike.
var page = func() []byte {
	columns := map[Kind]int{}
	for k := range kindRank {
		if k != KindNamespace {
			columns[k] = column(k)
		}
	}
	k, err := json.Marshal(map[string]any{
		"margin": margin, "nsPad": nsPad, "nsTitle": nsTitle, "headH": headH, "lineH": lineH,
		"padX": padX, "charW": charW, "detailW": detailW, "gapV": gapV, "gapCol": gapCol,
		"gapEntry": gapEntry, "gapSandbox": gapSandbox, "sbPad": sbPad, "sbHead": sbHead,
		"minW": minW, "headers": headers, "columns": columns, "nodeNamespace": NodeNamespace,
	})
	if err != nil {
		panic(err)
	}
	p := strings.Replace(pageHTML, "/*SVG STYLE*/", svgStyle, 1)
	return []byte(strings.Replace(p, "/*LAYOUT*/null", string(k), 1))
}()

// Paths are the paths Handler serves: the live page, and the graph as JSON, SVG and DOT.
var Paths = []string{"/graph", "/graph.json", "/graph.svg", "/graph.dot"}

// Handler serves, for GET: /graph, a page that draws the graph and fetches
// /graph.json again every second (it updates live as endpoints come and go, and needs
// nothing but this handler: no external assets); /graph.json, /graph.svg and
// /graph.dot, the graph source returns at each request. An error of source is a 500
// with its text.
func Handler(source func() (Graph, error)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /graph", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		// Inline script and style only, and fetches of this origin.
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
		w.Write(page)
	})
	serve := func(path, contentType string, render func(Graph) []byte) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			g, err := source()
			if err != nil {
				http.Error(w, "graph: "+err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", contentType)
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Write(render(g))
		})
	}
	serve("/graph.json", "application/json", Graph.JSON)
	serve("/graph.svg", "image/svg+xml", func(g Graph) []byte { return []byte(g.SVG()) })
	serve("/graph.dot", "text/vnd.graphviz; charset=utf-8", func(g Graph) []byte { return []byte(g.DOT()) })
	return mux
}
