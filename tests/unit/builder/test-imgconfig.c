/* test-imgconfig.c - image config loading and validation (src/builder/imgconfig.c): every
 * diagnostic code against its failing fixture in tests/data/builder-config/ (code and FILE:LINE
 * from the fixture's `expect` file), the valid fixture's values, the shipped guest/config, and
 * the character-set checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#include "fdutil.h"
#include "imgconfig.h"
#include "macro.h"
#include "strv.h"
#include "parse.h"

#ifndef FIXTURE_DIR
#error FIXTURE_DIR must name tests/data/builder-config
#endif

static void check_fixture(const char *name)
{
	char dir[512], path[600], code[8] = "", loc[128] = "";
	_cleanup_free_ char *expect = NULL;
	struct imgcfg_diags d = { 0 };
	struct imgcfg *c = NULL;
	snprintf(dir, sizeof(dir), "%s/%s", FIXTURE_DIR, name);
	snprintf(path, sizeof(path), "%s/expect", dir);
	assert_int_equal(read_file_small(path, 4096, &expect, NULL), 0);
	/* "CODE LOCATION" */
	size_t cl = strcspn(expect, " \n"), ll;
	assert_true(cl > 0 && cl < sizeof(code) && expect[cl] == ' ');
	memcpy(code, expect, cl);
	ll = strcspn(expect + cl + 1, " \n");
	assert_true(ll > 0 && ll < sizeof(loc));
	memcpy(loc, expect + cl + 1, ll);
	assert_int_equal(strncmp(name, code, 4), 0); /* the directory is named by its code */

	assert_int_equal(imgcfg_load(dir, &c, &d), -EINVAL);
	assert_null(c);
	int found = 0;
	for (size_t i = 0; i < d.n; i++) {
		char got[160];
		if (d.v[i].file)
			snprintf(got, sizeof(got), "%s:%u", d.v[i].file, d.v[i].line);
		else
			snprintf(got, sizeof(got), "-");
		if (!streq(d.v[i].code, code))
			fail_msg("%s: unexpected extra diagnostic %s %s: %s", name, d.v[i].code,
				 got, d.v[i].msg);
		if (streq(got, loc))
			found = 1;
		else
			print_message("%s: %s at %s (expected %s)\n", name, d.v[i].code, got, loc);
		assert_non_null(d.v[i].msg);
	}
	if (!found)
		fail_msg("%s: no %s at %s", name, code, loc);
	imgcfg_diags_done(&d);
}

static void test_fixtures(void **state)
{
	DIR *dd = opendir(FIXTURE_DIR);
	struct dirent *e;
	size_t n = 0;
	unsigned seen[64] = { 0 };
	assert_non_null(dd);
	while ((e = readdir(dd))) {
		if (e->d_name[0] != 'E')
			continue;
		check_fixture(e->d_name);
		uint32_t num = 0;
		const char *after;
		assert_int_equal(parse_u32_prefix(e->d_name + 1, &num, &after), 0);
		assert_true(num < ELEMENTSOF(seen));
		seen[num]++;
		n++;
	}
	closedir(dd);
	/* every code of imgconfig.h has its fixture */
	for (unsigned i = 1; i <= 22; i++)
		if (seen[i] != 1)
			fail_msg("code E%03u has %u fixtures, expected 1", i, seen[i]);
	assert_int_equal(n, 22);
}

static void test_valid(void **state)
{
	struct imgcfg_diags d = { 0 };
	_cleanup_(imgcfg_freep) struct imgcfg *c = NULL;
	assert_int_equal(imgcfg_load(FIXTURE_DIR "/valid", &c, &d), 0);
	assert_int_equal(d.n, 0);
	assert_string_equal(c->name, "fixture");
	assert_string_equal(c->node, IMGCFG_DEFAULT_NODE);
	assert_string_equal(c->npm_version, IMGCFG_DEFAULT_NPM);
	assert_string_equal(c->shell, IMGCFG_DEFAULT_SHELL);
	assert_int_equal(c->cpus, 4);
	assert_int_equal(c->memory_mib, 1024);
	assert_int_equal(c->disk_mib, 4096);
	assert_int_equal(c->n_providers, 1);
	assert_string_equal(c->providers[0].version, "latest");
	assert_true(c->providers[0].enabled);
	assert_int_equal(c->providers[0].n_files, 1);
	/* the leading newline of a multi-line string is not part of the file */
	assert_string_equal(c->providers[0].files[0].content, "{\"telemetry\": false}\n");
	assert_int_equal(c->providers[0].files[0].mode, 0644);
	assert_int_equal(c->n_mcp, 1);
	assert_string_equal(c->mcp[0].command, "capsem-mcp-relay");
	assert_string_equal(c->env[0], "EDITOR=vi");

	char **specs = imgcfg_npm_specs(c);
	assert_non_null(specs);
	assert_string_equal(specs[0], "@example/tool@latest");
	assert_null(specs[1]);
	strv_free(specs);

	/* canonical JSON: stable, and every field moves it */
	_cleanup_free_ char *j1 = imgcfg_to_json(c), *j2 = imgcfg_to_json(c), *j3 = NULL;
	assert_non_null(j1);
	assert_string_equal(j1, j2);
	c->cpus = 5;
	j3 = imgcfg_to_json(c);
	assert_string_not_equal(j1, j3);
}

static void test_guest_config(void **state)
{
	struct imgcfg_diags d = { 0 };
	_cleanup_(imgcfg_freep) struct imgcfg *c = NULL;
	int r = imgcfg_load(SOURCE_ROOT "/guest/config", &c, &d);
	for (size_t i = 0; i < d.n; i++)
		print_message("%s:%u: %s: %s\n", d.v[i].file, d.v[i].line, d.v[i].code, d.v[i].msg);
	assert_int_equal(r, 0);
	assert_string_equal(c->name, "debian");
	const char *want[] = { "claude", "gemini", "codex" };
	assert_int_equal(c->n_providers, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(c->providers[i].cli, want[i]);
		assert_true(c->providers[i].n_files >= 1);
	}
	imgcfg_diags_done(&d);
}

static void test_charsets(void **state)
{
	assert_true(imgcfg_deb_name_valid("python3-yaml"));
	assert_true(imgcfg_deb_name_valid("g++-12"));
	assert_false(imgcfg_deb_name_valid("x"));
	assert_false(imgcfg_deb_name_valid("-oAPT"));
	assert_true(imgcfg_npm_name_valid("@openai/codex"));
	assert_true(imgcfg_npm_name_valid("typescript"));
	assert_false(imgcfg_npm_name_valid("@openai"));
	assert_false(imgcfg_npm_name_valid("Typescript"));
	assert_false(imgcfg_npm_name_valid("../x"));
	assert_true(imgcfg_npm_selector_valid("^1.2.3"));
	assert_true(imgcfg_npm_selector_valid("latest"));
	assert_false(imgcfg_npm_selector_valid("--registry=x"));
	assert_false(imgcfg_npm_selector_valid("1 || 2"));
	assert_true(imgcfg_domain_valid("api.anthropic.com"));
	assert_true(imgcfg_domain_valid("*.googleapis.com"));
	assert_false(imgcfg_domain_valid("*.com"));
	assert_false(imgcfg_domain_valid("localhost"));
	assert_false(imgcfg_domain_valid("a.*.com"));
	assert_false(imgcfg_domain_valid("API.example.com"));
	assert_false(imgcfg_domain_valid("-a.example.com"));
	assert_true(imgcfg_env_name_valid("DISABLE_TELEMETRY"));
	assert_false(imgcfg_env_name_valid("A-B"));
	assert_true(imgcfg_seed_path_valid("/root/.codex/config.toml"));
	assert_true(imgcfg_seed_path_valid("/etc/gemini-cli/settings.json"));
	assert_false(imgcfg_seed_path_valid("/root/./x"));
	assert_false(imgcfg_seed_path_valid("/usr/bin/x"));
	assert_false(imgcfg_seed_path_valid("/root/"));
	assert_false(imgcfg_seed_path_valid("root/x"));
	assert_false(imgcfg_seed_path_valid("/etc//x"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_guest_config),
		cmocka_unit_test(test_charsets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
