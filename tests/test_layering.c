/*
 * test_layering.c — the dependency order of CONTRIBUTING.md, checked on the sources.
 *
 * 1. Parses the ```layering block of CONTRIBUTING.md ("dir: dirs it may include from").
 * 2. Scans every .c/.h/.cu/.cuh/.inc file under src/ and tools/ for `#include "..."`, resolves the
 *    path relative to the including file (then include/, then src/), and fails when a file's
 *    directory includes from a directory it may not. include/ (the public header) is open to
 *    everyone.
 * 3. Source file names are unique across src/, tools/ and tests/.
 * 4. Backend instances (a `const w4a8moe_experts_ops|w4a8moe_prepfin_ops|w4a8moe_device_ops
 *    NAME = ...` definition) are named only by their defining file and src/core/registry.c.
 *
 * Run from the repository root (the Makefile does); W4A8MOE_TEST_ROOT overrides.
 */
#include "test_util.h"

#include <ctype.h>
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_RULES 32
#define MAX_FILES 2048
#define PATH_CAP 512

typedef struct rule {
    char dir[64];
    char allowed[16][64];
    int n_allowed;
} rule;

static rule rules[MAX_RULES];
static int n_rules;

typedef struct src_file {
    char path[PATH_CAP]; /* relative to the root, e.g. "src/core/layer.c" */
} src_file;

static src_file files[MAX_FILES];
static int n_files;
static char root[PATH_CAP] = ".";

static char *read_all(const char *rel, size_t *len)
{
    char p[PATH_CAP * 2];
    if (snprintf(p, sizeof p, "%s/%s", root, rel) >= (int)sizeof p) return NULL;
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)(n < 0 ? 0 : n) + 1);
    size_t got = buf ? fread(buf, 1, (size_t)(n < 0 ? 0 : n), f) : 0;
    fclose(f);
    if (!buf) return NULL;
    buf[got] = '\0';
    if (len) *len = got;
    return buf;
}

static int exists(const char *rel)
{
    char p[PATH_CAP * 2];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/%s", root, rel) >= (int)sizeof p) return 0;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- 1. the rules ---- */

static void parse_rules(void)
{
    char *doc = read_all("CONTRIBUTING.md", NULL);
    CHECK(doc != NULL, "cannot read %s/CONTRIBUTING.md (run from the repository root)", root);
    if (!doc) return;
    char *start = strstr(doc, "```layering\n");
    CHECK(start != NULL, "CONTRIBUTING.md has no ```layering block");
    if (!start) {
        free(doc);
        return;
    }
    char *p = start + strlen("```layering\n");
    char *end = strstr(p, "```");
    CHECK(end != NULL, "the ```layering block is not closed");
    if (end) *end = '\0';
    for (char *line = strtok(p, "\n"); line; line = strtok(NULL, "\n")) {
        char *colon = strchr(line, ':');
        CHECK(colon != NULL, "layering line without ':': '%s'", line);
        if (!colon || n_rules == MAX_RULES) continue;
        rule *r = &rules[n_rules++];
        *colon = '\0';
        snprintf(r->dir, sizeof r->dir, "%s", line);
        for (char *tok = colon + 1; *tok;) {
            while (*tok == ' ' || *tok == '\t') tok++;
            size_t n = strcspn(tok, " \t");
            if (n && r->n_allowed < 16) snprintf(r->allowed[r->n_allowed++], 64, "%.*s", (int)n, tok);
            tok += n;
        }
    }
    free(doc);
    CHECK(n_rules >= 7, "the layering block has %d rules, expected common, loader, core, cpu, cuda, "
          "nccl, tools at least", n_rules);
    /* the block itself must encode the order common <- loader <- core <- backends <- tools */
    for (int i = 0; i < n_rules; i++) {
        int self = 0;
        for (int j = 0; j < rules[i].n_allowed; j++) {
            self |= strcmp(rules[i].allowed[j], rules[i].dir) == 0;
            if (strcmp(rules[i].dir, "src/common") == 0)
                CHECK(strcmp(rules[i].allowed[j], "src/common") == 0,
                      "src/common must depend on nothing, the block lets it include %s", rules[i].allowed[j]);
            if (strcmp(rules[i].allowed[j], "src/cpu") == 0 || strcmp(rules[i].allowed[j], "tools") == 0)
                CHECK(strcmp(rules[i].allowed[j], rules[i].dir) == 0,
                      "%s may not include from %s (a backend or the CLI)", rules[i].dir, rules[i].allowed[j]);
        }
        CHECK(self, "layering rule %s does not list itself", rules[i].dir);
    }
}

/* The rule whose dir is the longest prefix of path ("src/cuda/kernels/x.cuh" → "src/cuda"). */
static const rule *rule_for(const char *path)
{
    const rule *best = NULL;
    size_t best_len = 0;
    for (int i = 0; i < n_rules; i++) {
        size_t n = strlen(rules[i].dir);
        if (strncmp(path, rules[i].dir, n) == 0 && path[n] == '/' && n > best_len) {
            best = &rules[i];
            best_len = n;
        }
    }
    return best;
}

/* ---- 2. includes ---- */

static int is_source(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (!strcmp(dot, ".c") || !strcmp(dot, ".h") || !strcmp(dot, ".cu") ||
                   !strcmp(dot, ".cuh") || !strcmp(dot, ".inc"));
}

static void collect(const char *rel)
{
    char p[PATH_CAP * 2];
    if (snprintf(p, sizeof p, "%s/%s", root, rel) >= (int)sizeof p) return;
    DIR *d = opendir(p);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char child[PATH_CAP];
        if (snprintf(child, sizeof child, "%s/%s", rel, e->d_name) >= (int)sizeof child) continue;
        char full[PATH_CAP * 2];
        struct stat st;
        if (snprintf(full, sizeof full, "%s/%s", root, child) >= (int)sizeof full) continue;
        if (stat(full, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) collect(child);
        else if (S_ISREG(st.st_mode) && is_source(e->d_name) && n_files < MAX_FILES)
            snprintf(files[n_files++].path, PATH_CAP, "%s", child);
    }
    closedir(d);
}

/* Normalises "a/b/../c/./d" to "a/c/d" in place; returns 0 if it climbs above the root. */
static int normalise(char *path)
{
    char *parts[64];
    int n = 0;
    char tmp[PATH_CAP];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *tok = strtok(tmp, "/"); tok; tok = strtok(NULL, "/")) {
        if (!strcmp(tok, ".")) continue;
        if (!strcmp(tok, "..")) {
            if (n == 0) return 0;
            n--;
            continue;
        }
        if (n < 64) parts[n++] = tok;
    }
    char out[PATH_CAP] = "";
    for (int i = 0; i < n; i++) {
        strncat(out, parts[i], sizeof out - strlen(out) - 1);
        if (i + 1 < n) strncat(out, "/", sizeof out - strlen(out) - 1);
    }
    snprintf(path, PATH_CAP, "%s", out);
    return 1;
}

/* Resolves an #include "name" of file: next to it, then include/, then src/. */
static int resolve(const char *file, const char *name, char *out)
{
    char dir[PATH_CAP];
    snprintf(dir, sizeof dir, "%s", file);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    const char *bases[3] = {dir, "include", "src"};
    for (int i = 0; i < 3; i++) {
        char cand[PATH_CAP];
        if (snprintf(cand, sizeof cand, "%s/%s", bases[i], name) >= (int)sizeof cand) continue;
        if (!normalise(cand)) continue;
        if (exists(cand)) {
            memcpy(out, cand, sizeof cand);
            return 1;
        }
    }
    return 0;
}

static int allowed(const rule *r, const char *target)
{
    if (strncmp(target, "include/", 8) == 0) return 1;
    const rule *tr = rule_for(target);
    if (!tr) return 0;
    for (int i = 0; i < r->n_allowed; i++)
        if (!strcmp(r->allowed[i], tr->dir)) return 1;
    return 0;
}

static void check_includes(void)
{
    int edges = 0;
    for (int f = 0; f < n_files; f++) {
        const char *path = files[f].path;
        const rule *r = rule_for(path);
        CHECK(r != NULL, "%s lies in no directory of the layering block", path);
        if (!r) continue;
        char *text = read_all(path, NULL);
        if (!text) continue;
        for (char *line = text; line && *line;) {
            char *next = strchr(line, '\n');
            if (next) *next++ = '\0';
            char *p = line;
            while (*p == ' ' || *p == '\t') p++;
            if (*p == '#') {
                p++;
                while (*p == ' ' || *p == '\t') p++;
                if (!strncmp(p, "include", 7)) {
                    p += 7;
                    while (*p == ' ' || *p == '\t') p++;
                    char *close = *p == '"' ? strchr(p + 1, '"') : NULL;
                    if (close) {
                        char name[PATH_CAP], target[PATH_CAP];
                        snprintf(name, sizeof name, "%.*s", (int)(close - p - 1), p + 1);
                        int found = resolve(path, name, target);
                        CHECK(found, "%s includes \"%s\", which resolves to no file in the tree", path, name);
                        if (found) {
                            edges++;
                            CHECK(allowed(r, target), "%s (%s) includes %s: %s may include only from "
                                  "the directories CONTRIBUTING.md's layering block lists",
                                  path, r->dir, target, r->dir);
                        }
                    }
                }
            }
            line = next;
        }
        free(text);
    }
    printf("layering: %d rules, %d files, %d include edges checked\n", n_rules, n_files, edges);
    CHECK(edges > 20, "only %d include edges found: is the scan broken?", edges);
}

/* ---- 3. unique names ---- */

static void check_unique_names(void)
{
    int dups = 0;
    for (int i = 0; i < n_files; i++) {
        const char *a = strrchr(files[i].path, '/') + 1;
        for (int j = 0; j < i; j++) {
            const char *b = strrchr(files[j].path, '/') + 1;
            if (!strcmp(a, b)) {
                dups++;
                CHECK(0, "file name %s is used twice: %s and %s", a, files[j].path, files[i].path);
            }
        }
    }
    CHECK(dups == 0, "source file names must be unique across src/, tools/ and tests/");
}

/* ---- 4. backend instances ---- */

/* Blanks comments and string/char literals (keeping newlines), so names in them don't count. */
static void strip_comments(char *s)
{
    for (char *p = s; *p; p++) {
        if (p[0] == '/' && p[1] == '*') {
            char *e = strstr(p + 2, "*/");
            char *stop = e ? e + 2 : p + strlen(p);
            for (; p < stop; p++)
                if (*p != '\n') *p = ' ';
            p--;
        } else if (p[0] == '/' && p[1] == '/') {
            for (; *p && *p != '\n'; p++) *p = ' ';
            if (!*p) break;
        } else if (*p == '"' || *p == '\'') {
            char q = *p;
            for (p++; *p && *p != q && *p != '\n'; p++) {
                if (*p == '\\' && p[1]) *p++ = ' ';
                *p = ' ';
            }
            if (!*p) break;
        }
    }
}

static int ident_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Is `name` at text[i] a whole identifier? */
static int whole_word(const char *text, const char *at, size_t n)
{
    return (at == text || !ident_char(at[-1])) && !ident_char(at[n]);
}

typedef struct instance {
    char name[96];
    char file[PATH_CAP];
} instance;

static void check_instances(void)
{
    static const char *const types[3] = {"w4a8moe_experts_ops", "w4a8moe_prepfin_ops", "w4a8moe_device_ops"};
    static instance inst[256];
    int n_inst = 0;
    char **texts = calloc((size_t)n_files, sizeof *texts);
    for (int f = 0; f < n_files; f++) {
        if (strncmp(files[f].path, "tests/", 6) == 0) continue; /* test fakes are not instances */
        texts[f] = read_all(files[f].path, NULL);
        if (!texts[f]) continue;
        strip_comments(texts[f]);
        for (int t = 0; t < 3; t++) {
            size_t tl = strlen(types[t]);
            for (char *p = strstr(texts[f], types[t]); p; p = strstr(p + tl, types[t])) {
                if (!whole_word(texts[f], p, tl)) continue;
                char *q = p + tl;
                while (isspace((unsigned char)*q)) q++;
                char *name = q;
                while (ident_char(*q)) q++;
                size_t nl = (size_t)(q - name);
                while (isspace((unsigned char)*q)) q++;
                if (nl == 0 || *q != '=' || q[1] == '=' || n_inst == 256) continue; /* not a definition */
                snprintf(inst[n_inst].name, sizeof inst[n_inst].name, "%.*s", (int)nl, name);
                snprintf(inst[n_inst].file, PATH_CAP, "%s", files[f].path);
                n_inst++;
            }
        }
    }
    int found_ref = 0;
    for (int i = 0; i < n_inst; i++) found_ref |= !strcmp(inst[i].name, "w4a8moe_cpu_ref_experts");
    CHECK(found_ref, "the scan found no definition of the cpu_ref backend: is it broken?");
    printf("backend instances: %d\n", n_inst);
    for (int f = 0; f < n_files; f++) {
        if (!texts[f] || !strcmp(files[f].path, "src/core/registry.c")) continue;
        for (int i = 0; i < n_inst; i++) {
            if (!strcmp(files[f].path, inst[i].file)) continue;
            size_t nl = strlen(inst[i].name);
            for (char *p = strstr(texts[f], inst[i].name); p; p = strstr(p + nl, inst[i].name))
                if (whole_word(texts[f], p, nl)) {
                    CHECK(0, "%s names backend instance %s (defined in %s); only src/core/registry.c "
                          "may", files[f].path, inst[i].name, inst[i].file);
                    break;
                }
        }
    }
    for (int f = 0; f < n_files; f++) free(texts[f]);
    free(texts);
}

/* ---- self-test of the helpers, so a broken scanner cannot pass silently ---- */

static void check_helpers(void)
{
    char p[PATH_CAP] = "src/cpu/../core/./backend.h";
    CHECK(normalise(p) && !strcmp(p, "src/core/backend.h"), "normalise gives '%s'", p);
    snprintf(p, sizeof p, "../x.h");
    CHECK(!normalise(p), "a path above the root is refused");
    char s[] = "a /* w4a8moe_x */ b // w4a8moe_y\n\"w4a8moe_z\" c";
    strip_comments(s);
    CHECK(!strstr(s, "w4a8moe_") && strchr(s, 'a') && strchr(s, 'b') && strchr(s, 'c') && strchr(s, '\n'),
          "strip_comments gives '%s'", s);
    const rule *r = rule_for("src/cuda/kernels/sm90_gemm.cuh");
    CHECK(r && !strcmp(r->dir, "src/cuda"), "a file in a subdirectory belongs to its top directory");
    const rule *core = rule_for("src/core/layer.c"), *cpu = rule_for("src/cpu/cpu_ref_experts.c");
    if (core && cpu) {
        CHECK(!allowed(core, "src/cpu/cpu_ref_experts.c"), "core must not include from cpu");
        CHECK(allowed(cpu, "src/core/backend.h") && allowed(cpu, "include/w4a8moe.h"),
              "cpu may include core and the public header");
    }
}

int main(void)
{
    const char *env = getenv("W4A8MOE_TEST_ROOT");
    if (env && env[0]) snprintf(root, sizeof root, "%s", env);
    parse_rules();
    check_helpers();
    collect("src");
    collect("tools");
    int before_tests = n_files;
    collect("tests");
    CHECK(before_tests > 10 && n_files > before_tests, "found %d source files (%d in tests)", n_files,
          n_files - before_tests);
    int saved = n_files;
    n_files = before_tests; /* the include rules cover src/ and tools/ */
    check_includes();
    n_files = saved;
    check_unique_names();
    check_instances();
    TEST_MAIN_END();
}
