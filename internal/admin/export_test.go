package admin

// RouteKeys lists the route table as "METHOD PATTERN", for the role
// matrix test (roles_test.go), which must cover every route.
func RouteKeys() []string {
	ks := make([]string, 0, len(routes))
	for _, rt := range routes {
		ks = append(ks, rt.method+" "+rt.path)
	}
	return ks
}
