package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The XML side: just enough of the spec's structure for encoding/xml. Only
// direct <doc> children are read, so the docs of <rule>s are left out.

type xmlSpec struct {
	Constants []xmlConstant `xml:"constant"`
	Domains   []xmlDomain   `xml:"domain"`
	Classes   []xmlClass    `xml:"class"`
}

type xmlDoc struct {
	Type string `xml:"type,attr"` // "", "grammar" or "scenario"
	Text string `xml:",chardata"`
}

type xmlConstant struct {
	Name  string   `xml:"name,attr"`
	Value int      `xml:"value,attr"`
	Class string   `xml:"class,attr"` // "soft-error", "hard-error" or ""
	Docs  []xmlDoc `xml:"doc"`
}

type xmlDomain struct {
	Name  string   `xml:"name,attr"`
	Type  string   `xml:"type,attr"`
	Label string   `xml:"label,attr"`
	Docs  []xmlDoc `xml:"doc"`
}

type xmlClass struct {
	Name    string      `xml:"name,attr"`
	Index   int         `xml:"index,attr"`
	Label   string      `xml:"label,attr"`
	Docs    []xmlDoc    `xml:"doc"`
	Fields  []xmlField  `xml:"field"` // content properties
	Methods []xmlMethod `xml:"method"`
}

type xmlMethod struct {
	Name        string        `xml:"name,attr"`
	Index       int           `xml:"index,attr"`
	Label       string        `xml:"label,attr"`
	Synchronous bool          `xml:"synchronous,attr"`
	Content     bool          `xml:"content,attr"`
	Deprecated  bool          `xml:"deprecated,attr"`
	Docs        []xmlDoc      `xml:"doc"`
	Chassis     []xmlChassis  `xml:"chassis"`
	Responses   []xmlResponse `xml:"response"`
	Fields      []xmlField    `xml:"field"`
}

type xmlChassis struct {
	Name string `xml:"name,attr"` // the peer that implements (receives) the method
}

type xmlResponse struct {
	Name string `xml:"name,attr"`
}

type xmlField struct {
	Name     string   `xml:"name,attr"`
	Domain   string   `xml:"domain,attr"`
	Type     string   `xml:"type,attr"` // reserved fields give a type instead of a domain
	Label    string   `xml:"label,attr"`
	Reserved bool     `xml:"reserved,attr"`
	Docs     []xmlDoc `xml:"doc"`
}

// The resolved model that render.go works from: names checked, domains
// resolved to wire types, responses linked, spec quirks applied.

type model struct {
	Classes    []*class
	Methods    []*method // all methods, in spec order
	Properties []*field  // the basic class's content properties
	Codes      []*replyCode
}

type class struct {
	Name    string // "queue"
	ID      uint16
	Methods []*method
}

type method struct {
	Class      *class
	Name       string // "declare-ok"
	ID         uint16
	Doc        []string // paragraphs
	Responses  []*method
	ReplyTo    []*method // the methods this one answers
	Content    bool
	Deprecated bool
	Sender     peer
	Fields     []*field
	Notes      []string // where and why the generator overrides the XML
}

// FullName is the spec's dotted name, "queue.declare-ok".
func (m *method) FullName() string { return m.Class.Name + "." + m.Name }

// Synchronous reports whether the sender waits for a response. The XML also
// marks the responses themselves synchronous="1"; that says they belong to a
// synchronous exchange, not that anything answers them.
func (m *method) Synchronous() bool { return len(m.Responses) > 0 }

type peer int

const (
	peerEither peer = iota
	peerClient
	peerServer
)

type field struct {
	Name     string // the spec's name, after quirk fixes: "no-wait"
	GoName   string // "NoWait"; empty for reserved fields
	Type     string // wire type: "bit", "octet", "short", ... "table"
	Domain   string // the domain it was declared with, "" for a bare type
	Reserved bool
	Doc      []string
}

type replyCode struct {
	Name  string // "not-found"
	Value uint16
	Hard  bool
	Doc   []string
}

// wireTypes are the spec's primitive types.
var wireTypes = map[string]bool{
	"bit": true, "octet": true, "short": true, "long": true, "longlong": true,
	"shortstr": true, "longstr": true, "timestamp": true, "table": true,
}

// Spec quirks (see spec/README.md). Each one is keyed by the spec's names, so
// it is applied where it belongs and nowhere else.
var (
	// basic.recover is synchronous with response recover-ok (the stripped
	// spec, the rabbitmq-codegen JSON and every broker agree), but the
	// extended XML carries neither the flag nor the <response>.
	forcedResponses = map[string][]string{"basic.recover": {"recover-ok"}}

	// Both XML files give update-secret chassis="client" and update-secret-ok
	// chassis="server", which would make the server the sender. In practice
	// the client sends update-secret and the server answers.
	forcedSenders = map[string]peer{
		"connection.update-secret":    peerClient,
		"connection.update-secret-ok": peerServer,
	}

	// confirm.select spells its no-wait field "nowait"; every other method
	// says "no-wait", and the Go name should be NoWait everywhere.
	fieldRenames = map[string]string{"nowait": "no-wait"}

	// connection.close and channel.close carry the failing method's class-id
	// and method-id, whose natural Go names would collide with the
	// ClassID() and MethodID() methods every struct has.
	collisionRenames = map[string]string{"class-id": "FailingClassID", "method-id": "FailingMethodID"}

	// The 14th basic property is called "reserved" in 0-9-1; it was
	// cluster-id in 0-9 and brokers still carry it, so it stays settable.
	propertyRenames = map[string]string{"reserved": "cluster-id"}
)

// methodNames are the Method interface's exported methods: no field may take
// these names.
var methodNames = map[string]bool{"ClassID": true, "MethodID": true, "MethodName": true}

// parse decodes the spec XML and builds the checked model.
func parse(src []byte) (*model, error) {
	var s xmlSpec
	dec := xml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("parsing spec: %w", err)
	}
	return build(&s)
}

// build resolves and validates s. It reports every problem it finds, not
// just the first, so a broken spec is fixed in one pass.
func build(s *xmlSpec) (*model, error) {
	b := &builder{domains: map[string]xmlDomain{}, usedQuirks: map[string]bool{}}
	for _, d := range s.Domains {
		if _, dup := b.domains[d.Name]; dup {
			b.errorf("domain %q defined twice", d.Name)
		}
		if !wireTypes[d.Type] {
			b.errorf("domain %q has unknown type %q", d.Name, d.Type)
		}
		b.domains[d.Name] = d
	}
	m := &model{}
	m.Codes = b.replyCodes(s.Constants)
	classIDs := map[int]string{}
	for _, xc := range s.Classes {
		if prev, dup := classIDs[xc.Index]; dup {
			b.errorf("class %s: index %d already used by class %s", xc.Name, xc.Index, prev)
		}
		classIDs[xc.Index] = xc.Name
		c := b.class(xc)
		m.Classes = append(m.Classes, c)
		m.Methods = append(m.Methods, c.Methods...)
		if len(xc.Fields) == 0 {
			continue
		}
		if xc.Name != "basic" {
			// frame.go's Properties is the basic class's; a second class
			// with content would need its own properties type.
			b.errorf("class %s: content properties are only supported for class basic", xc.Name)
			continue
		}
		m.Properties = b.properties(xc)
	}
	// A quirk whose method has gone means the spec changed under us.
	quirks := append(slices.Sorted(maps.Keys(forcedResponses)), slices.Sorted(maps.Keys(forcedSenders))...)
	for _, name := range quirks {
		if !b.usedQuirks[name] {
			b.errorf("quirk for %s: no such method", name)
		}
	}
	if len(b.errs) > 0 {
		return nil, errors.Join(b.errs...)
	}
	return m, nil
}

type builder struct {
	domains    map[string]xmlDomain
	usedQuirks map[string]bool // methods that forcedResponses or forcedSenders matched
	errs       []error
}

func (b *builder) errorf(format string, args ...any) {
	b.errs = append(b.errs, fmt.Errorf(format, args...))
}

func (b *builder) replyCodes(cs []xmlConstant) []*replyCode {
	var codes []*replyCode
	for _, c := range cs {
		// reply-success has no class; every other reply code is a soft or
		// hard error. The rest (frame-*) are framing constants.
		if c.Class == "" && c.Name != "reply-success" {
			continue
		}
		if c.Class != "" && c.Class != "soft-error" && c.Class != "hard-error" {
			b.errorf("constant %s: unknown class %q", c.Name, c.Class)
			continue
		}
		if c.Value < 100 || c.Value > 999 {
			b.errorf("constant %s: reply code %d out of range", c.Name, c.Value)
			continue
		}
		codes = append(codes, &replyCode{
			Name:  c.Name,
			Value: uint16(c.Value),
			Hard:  c.Class == "hard-error",
			Doc:   docText(c.Docs),
		})
	}
	return codes
}

func (b *builder) class(xc xmlClass) *class {
	if xc.Index <= 0 || xc.Index > 0xFFFF {
		b.errorf("class %s: index %d out of range", xc.Name, xc.Index)
	}
	c := &class{Name: xc.Name, ID: uint16(xc.Index)}
	byName := map[string]*method{}
	ids := map[int]string{}
	for _, xm := range xc.Methods {
		full := xc.Name + "." + xm.Name
		if _, dup := byName[xm.Name]; dup {
			b.errorf("method %s defined twice", full)
		}
		if prev, dup := ids[xm.Index]; dup {
			b.errorf("method %s: index %d already used by %s.%s", full, xm.Index, xc.Name, prev)
		}
		if xm.Index <= 0 || xm.Index > 0xFFFF {
			b.errorf("method %s: index %d out of range", full, xm.Index)
		}
		ids[xm.Index] = xm.Name
		m := &method{
			Class:      c,
			Name:       xm.Name,
			ID:         uint16(xm.Index),
			Doc:        docText(xm.Docs),
			Content:    xm.Content,
			Deprecated: xm.Deprecated,
		}
		var note string
		m.Sender, note = b.sender(full, xm.Chassis)
		if note != "" {
			m.Notes = append(m.Notes, note)
		}
		m.Fields = b.fields(full, xm.Fields)
		byName[xm.Name] = m
		c.Methods = append(c.Methods, m)
	}
	// Link responses once every method of the class is known: a response
	// may be declared after the method that names it.
	for i, xm := range xc.Methods {
		m := c.Methods[i]
		full := m.FullName()
		names := responseNames(xm.Responses)
		if forced, ok := forcedResponses[full]; ok {
			b.usedQuirks[full] = true
			if len(names) == 0 {
				names = forced
				m.Notes = append(m.Notes, "The spec XML does not mark "+full+" synchronous; "+
					"specgen adds its response "+strings.Join(forced, ", ")+", as brokers and the stripped spec have it.")
			}
		}
		if len(names) > 0 && !xm.Synchronous && forcedResponses[full] == nil {
			b.errorf("method %s has responses but is not synchronous", full)
		}
		for _, name := range names {
			r, ok := byName[name]
			if !ok {
				b.errorf("method %s: response %q is not a method of class %s", full, name, xc.Name)
				continue
			}
			m.Responses = append(m.Responses, r)
			r.ReplyTo = append(r.ReplyTo, m)
		}
	}
	// A synchronous method must either expect a response or be one. One that
	// does neither is what the missing basic.recover response looks like.
	for i, xm := range xc.Methods {
		m := c.Methods[i]
		if xm.Synchronous && len(m.Responses) == 0 && len(m.ReplyTo) == 0 {
			b.errorf("method %s is synchronous but has no response and answers nothing", m.FullName())
		}
	}
	return c
}

func responseNames(rs []xmlResponse) []string {
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	return names
}

// sender derives who sends a method from its <chassis> elements, which name
// the peers that must implement (receive) it. It returns a note for the doc
// comment when a quirk overrides the XML.
func (b *builder) sender(full string, chassis []xmlChassis) (peer, string) {
	var client, server bool
	for _, c := range chassis {
		switch c.Name {
		case "client":
			client = true
		case "server":
			server = true
		default:
			b.errorf("method %s: unknown chassis %q", full, c.Name)
		}
	}
	p := peerEither
	switch {
	case client && server:
	case server:
		p = peerClient
	case client:
		p = peerServer
	default:
		b.errorf("method %s: no chassis, so no sender", full)
	}
	forced, ok := forcedSenders[full]
	if !ok {
		return p, ""
	}
	b.usedQuirks[full] = true
	if forced == p {
		return p, ""
	}
	return forced, fmt.Sprintf("The spec XML's chassis elements say %s sends %s; in practice %s does, and specgen follows practice.",
		p, full, forced)
}

func (p peer) String() string {
	switch p {
	case peerClient:
		return "the client"
	case peerServer:
		return "the server"
	}
	return "either peer"
}

func (b *builder) fields(full string, xfs []xmlField) []*field {
	var fs []*field
	goNames := map[string]string{}
	for _, xf := range xfs {
		f := b.field(full, xf)
		if f == nil {
			continue
		}
		if !f.Reserved {
			if methodNames[f.GoName] {
				if r, ok := collisionRenames[f.Name]; ok {
					f.Doc = append(f.Doc, fmt.Sprintf("The spec calls this field %s; %s is a method of every method type.", f.Name, f.GoName))
					f.GoName = r
				} else {
					b.errorf("method %s: field %s would be named %s, which is a method name", full, f.Name, f.GoName)
				}
			}
			if prev, dup := goNames[f.GoName]; dup {
				b.errorf("method %s: fields %s and %s are both named %s in Go", full, prev, f.Name, f.GoName)
			}
			goNames[f.GoName] = f.Name
		}
		fs = append(fs, f)
	}
	return fs
}

// field resolves one field's wire type and doc. A reserved field (the spec
// marks them reserved="1" and names them reserved-N) is kept for its wire
// type but gets no Go name.
func (b *builder) field(owner string, xf xmlField) *field {
	name := xf.Name
	if r, ok := fieldRenames[name]; ok {
		name = r
	}
	f := &field{Name: name, Domain: xf.Domain}
	f.Reserved = xf.Reserved || strings.HasPrefix(name, "reserved")
	var dom xmlDomain
	switch {
	case xf.Domain != "" && xf.Type != "":
		b.errorf("%s field %s: both domain %q and type %q", owner, xf.Name, xf.Domain, xf.Type)
		return nil
	case xf.Type != "":
		if !wireTypes[xf.Type] {
			b.errorf("%s field %s: unknown type %q", owner, xf.Name, xf.Type)
			return nil
		}
		f.Type = xf.Type
	case xf.Domain != "":
		d, ok := b.domains[xf.Domain]
		if !ok {
			b.errorf("%s field %s: unknown domain %q", owner, xf.Name, xf.Domain)
			return nil
		}
		f.Type, dom = d.Type, d
	default:
		b.errorf("%s field %s: neither domain nor type", owner, xf.Name)
		return nil
	}
	// The field's own doc is best. Many fields have only a label, or
	// nothing, and rely on their domain's doc ("no-wait", "reply-code").
	f.Doc = docText(xf.Docs)
	if len(f.Doc) == 0 {
		if xf.Label != "" {
			f.Doc = []string{sentence(xf.Label)}
		}
		f.Doc = append(f.Doc, docText(dom.Docs)...)
	}
	if len(f.Doc) == 0 && dom.Label != "" {
		f.Doc = []string{sentence(dom.Label)}
	}
	if !f.Reserved {
		f.GoName = goName(name)
	}
	return f
}

func (b *builder) properties(xc xmlClass) []*field {
	// The flag word has 15 usable bits (bit 0 flags a continuation word,
	// which 0-9-1 never needs).
	if len(xc.Fields) > 15 {
		b.errorf("class %s: %d properties, more than one flag word holds", xc.Name, len(xc.Fields))
	}
	var ps []*field
	for _, xf := range xc.Fields {
		renamed := xf
		if r, ok := propertyRenames[xf.Name]; ok {
			renamed.Name = r
		}
		f := b.field(xc.Name+" properties", renamed)
		if f == nil {
			continue
		}
		if f.Type == "bit" {
			// A bit property would be its own presence flag; 0-9-1 has none.
			b.errorf("class %s: property %s is a bit, which is not supported", xc.Name, xf.Name)
			continue
		}
		if f.Reserved {
			b.errorf("class %s: property %s is reserved; the generator cannot skip properties", xc.Name, xf.Name)
			continue
		}
		if xf.Name != f.Name {
			f.Doc = append(f.Doc, fmt.Sprintf("The spec calls this property %q; it was %s in AMQP 0-9.", xf.Name, f.Name))
		}
		ps = append(ps, f)
	}
	return ps
}

// docText turns <doc> elements into paragraphs of single-spaced text. Grammar
// and scenario docs are for implementers of test suites, not API users.
func docText(docs []xmlDoc) []string {
	var paras []string
	for _, d := range docs {
		if d.Type != "" {
			continue
		}
		var cur []string
		flush := func() {
			if len(cur) > 0 {
				paras = append(paras, strings.Join(cur, " "))
				cur = nil
			}
		}
		for line := range strings.SplitSeq(d.Text, "\n") {
			words := strings.Fields(line)
			if len(words) == 0 {
				flush()
				continue
			}
			cur = append(cur, words...)
		}
		flush()
	}
	return paras
}

// sentence makes a label ("queue name") read as a sentence ("Queue name.").
func sentence(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return s
	}
	s = strings.ToUpper(s[:1]) + s[1:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// initialisms are spelled in capitals in Go names (ClassID, not ClassId).
var initialisms = map[string]string{"id": "ID", "ttl": "TTL", "url": "URL", "uri": "URI"}

// goName converts a spec name such as "auto-delete" or "class-id" to its Go
// spelling, "AutoDelete" or "ClassID".
func goName(name string) string {
	var sb strings.Builder
	for part := range strings.SplitSeq(name, "-") {
		if part == "" {
			continue
		}
		if up, ok := initialisms[part]; ok {
			sb.WriteString(up)
			continue
		}
		sb.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return sb.String()
}
