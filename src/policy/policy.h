/*
 * policy — the privacy policy: who may see which rows and which column values, decided per
 * change and subscriber exactly as PostgreSQL's row-level security (RLS) and the masking views
 * decide it, without asking the database.
 *
 * The policy comes from one readable file (deploy/policy.ini, docs/policies.md): the ranked
 * roles, where a user's role in an org comes from ([membership]), where privacy rules come from
 * ([privacy]), and one [table schema.name] section per governed table with its column list, its
 * org column, its `read` rule and its column masks / encrypted columns. The same compiled form
 * drives this evaluator and the SQL generator (policy_sql.h), so the database's policies and
 * walcast's decisions come from one source.
 *
 * Compiled form. Every rule is a flat postfix program (policy_insn[]) over a handful of atoms
 * with Kleene three-valued logic (FALSE < UNKNOWN < TRUE; AND = min, OR = max, NOT swaps TRUE
 * and FALSE and keeps UNKNOWN), exactly SQL's. The instruction set is public on purpose: other
 * front ends (for example RLS expressions read back from pg_policies) can target it and use the
 * same evaluator (policy_program_check, policy_program_eval). A decision is TRUE or not: a
 * top-level UNKNOWN denies, as RLS's USING and a view's CASE WHEN do.
 *
 * Life cycle. policy_load_file() parses and compiles once; the policy is immutable afterwards
 * and may be shared read-only by any number of threads. A policy_table is bound to a relation of
 * the relation cache (column names -> positions in the decoded tuple) by policy_bind() or, with
 * caching per relation version, by a policy_cache (owned by one thread). Evaluation functions
 * read only their arguments: they never allocate, never block and are cheap (tens of
 * nanoseconds for the platform's rules).
 *
 * Deny by default: a table without a [table] section is not governed; callers deliver nothing
 * of it to non-bypass subscribers. A relation column that the policy's `columns` list does not
 * name (added to the table after the policy was written) is POLICY_OMIT: the masking views do
 * not have it either.
 */
#ifndef WALCAST_POLICY_H
#define WALCAST_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "change.h"
#include "relcache.h"

typedef struct policy policy;
typedef struct policy_table policy_table;
typedef struct policy_bound policy_bound;
typedef struct policy_cache policy_cache;

#define POLICY_ERROR_MAX 512
#define POLICY_RANKS_MAX 64     /* roles in [roles] ranks */
#define POLICY_PROGRAM_MAX 256  /* instructions in one compiled rule */
#define POLICY_STACK_MAX 32     /* evaluation stack depth (nesting) of one rule */
#define POLICY_UUID_TEXT_LEN 36 /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */

/* ---- the compiled program ------------------------------------------------------------- */

/* Three-valued truth, ordered so that AND is min, OR is max and NOT is 2 - x. */
typedef enum policy_truth {
	POLICY_FALSE = 0,
	POLICY_UNKNOWN = 1, /* SQL NULL */
	POLICY_TRUE = 2,
} policy_truth;

/* Instructions. `arg` is a column position (in a policy_table's program: the index in the
 * table's `columns` list; in a bound program and for policy_program_eval: the index in the
 * tuple) or a rank. Each pushes one value; NOT pops one, AND and OR pop two.
 *
 *   TRUE, FALSE   the constants
 *   RANK_GE r     viewer's rank in the row's org >= r             (never UNKNOWN)
 *   PRIVACY c     value of column c is NULL (no subject, no rule), or the subject's privacy
 *                 rule min rank (0 = no rule) <= viewer's rank     (never UNKNOWN)
 *   EQ_UID c      value of column c = the viewer's user id; UNKNOWN when either is NULL
 *   NOT, AND, OR  Kleene logic, as SQL's                                                    */
typedef enum policy_opcode {
	POLICY_OP_TRUE = 1,
	POLICY_OP_FALSE,
	POLICY_OP_RANK_GE,
	POLICY_OP_PRIVACY,
	POLICY_OP_EQ_UID,
	POLICY_OP_NOT,
	POLICY_OP_AND,
	POLICY_OP_OR,
} policy_opcode;

typedef struct policy_insn {
	uint16_t op;  /* policy_opcode */
	uint16_t arg; /* column or rank; 0 for the others */
} policy_insn;

/* Who is looking. rank is the viewer's rank in the org of the row being judged (the caller
 * mirrors org_roles and looks it up from the row's org column value): 1..n, 0 = not a member,
 * and always 0 without a uid. uid is the viewer's user id in PostgreSQL's canonical uuid text
 * (lower-case, hyphenated: see policy_uuid_canonical), or NULL for none; it is compared
 * byte for byte with the column's text, which is how the WAL carries uuids. bypass: the viewer's
 * role is a bypass role (policy_role_bypasses): every row, every value, unmasked and decrypted.
 * subject_rank answers privacy(col): the min rank of the privacy rule of that subject (the
 * column's text), 0 when it has none, or a negative errno that the evaluation returns as is; it
 * must not be NULL when the table's rules use privacy() (the evaluation returns -EINVAL). */
typedef struct policy_viewer {
	int rank;
	const char *uid;
	size_t uid_len;
	bool bypass;
	int (*subject_rank)(void *arg, const char *subject, size_t len);
	void *subject_arg;
} policy_viewer;

/* Validates a program for tuples of ncols columns and ranks 1..nranks: known opcodes, column
 * and rank arguments in range, the stack never underflows nor exceeds POLICY_STACK_MAX, and
 * exactly one value remains. 0 or -EINVAL. Does not block. */
__attribute__((warn_unused_result)) int policy_program_check(const policy_insn *prog, size_t n,
                                                             size_t ncols, int nranks);

/* Runs a program that passed policy_program_check over tuple (at least ncols values). Returns
 * a policy_truth (>= 0), or -ENODATA when an atom needs a column the tuple does not carry
 * (VALUE_ABSENT or VALUE_UNCHANGED), -EINVAL when privacy() is used without subject_rank, or
 * subject_rank's negative error. Every atom is evaluated (no short cut), so the result and any
 * error do not depend on the order of operands. Allocation-free; does not block. */
int policy_program_eval(const policy_insn *prog, size_t n, const change_value *tuple,
                        const policy_viewer *v);

/* ---- loading ---------------------------------------------------------------------------- */

/* Reads and compiles the policy file at path (format: docs/policies.md). Returns 0 and a new
 * policy in *out that the caller owns (policy_destroy), or -EINVAL with err as
 * "path:line: reason" (for example "deploy/policy.ini:54: table public.events: read: unknown
 * column 'contact'"), -errno when the file cannot be read (err says so), or -ENOMEM. Reads the
 * file (blocking I/O); nothing else blocks. */
__attribute__((warn_unused_result)) int policy_load_file(const char *path, policy **out,
                                                         char err[POLICY_ERROR_MAX]);

/* As policy_load_file, from the NUL-terminated text; name stands for the file name in errors.
 * Does not block. */
__attribute__((warn_unused_result)) int policy_load_string(const char *text, const char *name,
                                                           policy **out,
                                                           char err[POLICY_ERROR_MAX]);

/* Frees the policy and everything it owns. Every policy_bound and policy_cache made from it
 * must be destroyed first. Safe on NULL. */
void policy_destroy(policy *p);

/* ---- roles and policy sources (for the module that mirrors org_roles and privacy_rules) --- */

/* Number of ranked roles, n: ranks are 1 (lowest) .. n (highest). */
int policy_rank_count(const policy *p);

/* Name of rank 1..n, or NULL outside that range. Owned by the policy. */
const char *policy_rank_name(const policy *p, int rank);

/* Rank of a role name (role[0..len)), 0 when it is not a ranked role: walcast.role_rank(). */
int policy_role_rank(const policy *p, const char *role, size_t len);

/* Bypass roles ([roles] bypass): count, i-th name (owned by the policy), and membership test. */
size_t policy_bypass_count(const policy *p);
const char *policy_bypass_role(const policy *p, size_t i);
bool policy_role_bypasses(const policy *p, const char *role, size_t len);

/* Member token roles ([roles] members; default authenticated): count and i-th name (owned by the
 * policy). */
size_t policy_member_role_count(const policy *p);
const char *policy_member_role(const policy *p, size_t i);

/* What a subscriber's token role (a database role: authenticated, anon, service_role, ...) may
 * see, as PostgreSQL grants it: */
typedef enum policy_role_access {
	POLICY_ROLE_DENIED, /* a role [roles] names neither as member nor bypass: nothing at all */
	POLICY_ROLE_MEMBER, /* [roles] members: the token's sub is judged through [membership] */
	POLICY_ROLE_BYPASS, /* [roles] bypass: every row, every value */
} policy_role_access;

/* The access of token role role[0..len); NULL is DENIED. */
policy_role_access policy_role_kind(const policy *p, const char *role, size_t len);

/* Where a user's role in an org comes from. Strings owned by the policy. */
typedef struct policy_membership {
	const char *schema, *table; /* e.g. public, org_roles */
	const char *org, *user, *role; /* column names */
} policy_membership;

/* Where privacy rules come from: one rule per subject (e.g. contact) with a min role. */
typedef struct policy_privacy {
	const char *schema, *table; /* e.g. public, privacy_rules */
	const char *subject, *min_role; /* column names */
} policy_privacy;

/* The [membership] section (always present). */
const policy_membership *policy_membership_source(const policy *p);

/* The [privacy] section, or NULL when the file has none (then no rule uses privacy()). */
const policy_privacy *policy_privacy_source(const policy *p);

/* ---- governed tables (read-only views of the compiled policy) ------------------------------ */

/* How a column is delivered to a viewer who sees the row. */
typedef enum policy_rule_kind {
	POLICY_RULE_PLAIN = 0,  /* as is */
	POLICY_RULE_MASK_LAST4, /* as is when cond is TRUE, else masked to its last four characters */
	POLICY_RULE_MASK_NULL,  /* as is when cond is TRUE, else NULL */
	POLICY_RULE_ENCRYPTED,  /* decrypted when cond is TRUE, else NULL; the database cannot decrypt */
} policy_rule_kind;

typedef struct policy_column_rule {
	policy_rule_kind kind;
	const policy_insn *cond; /* NULL for PLAIN; column args are `columns` indexes */
	size_t cond_len;
	int cond_id;             /* index among the table's distinct conditions; -1 for PLAIN */
	int context;             /* ENCRYPTED: `columns` index of the AAD context column, -1 = none */
} policy_column_rule;

/* Number of [table] sections and the i-th one, in file order. Owned by the policy. */
size_t policy_table_count(const policy *p);
const policy_table *policy_table_at(const policy *p, size_t i);

/* The table section for schema.name, or NULL when the table is not governed. */
const policy_table *policy_table_find(const policy *p, const char *schema, size_t schema_len,
                                      const char *name, size_t name_len);

/* Accessors; strings and arrays are owned by the policy. */
const char *policy_table_schema(const policy_table *t);
const char *policy_table_name(const policy_table *t);
const char *policy_table_view(const policy_table *t); /* masking view name, in schema walcast */
size_t policy_table_ncols(const policy_table *t);     /* the `columns` list */
const char *policy_table_column(const policy_table *t, size_t i);
size_t policy_table_org(const policy_table *t);       /* `columns` index of the org column */
/* The read rule as written (without the implicit "member of the row's org" term). */
const policy_insn *policy_table_read(const policy_table *t, size_t *len);
/* The rule of column i (PLAIN unless masked or encrypted). */
const policy_column_rule *policy_table_rule(const policy_table *t, size_t i);

/* ---- binding to a relation and evaluating ------------------------------------------------- */

/* What to do with one column of a visible row (policy_row_columns). Whatever the action, a
 * NULL value stays NULL and a VALUE_UNCHANGED value stays unchanged. */
typedef enum policy_action {
	POLICY_KEEP = 0,    /* deliver as is */
	POLICY_MASK_LAST4,  /* deliver policy_mask_last4(value) */
	POLICY_DECRYPT,     /* deliver the decrypted value (keyring_decrypt_hex with the context column) */
	POLICY_NULL,        /* deliver NULL */
	POLICY_OMIT,        /* the policy does not know this column: leave it out */
} policy_action;

/* Flags of a bound table, for grouping subscribers into audiences. */
enum {
	POLICY_READ_USES_UID = 1u << 0,    /* the read rule compares columns with the viewer's uid */
	POLICY_COLUMNS_USE_UID = 1u << 1,  /* some mask / decrypt condition does */
	POLICY_USES_PRIVACY = 1u << 2,     /* some rule calls subject_rank */
};

/* Binds table t to rel (same schema and name), resolving column names to tuple positions.
 * Every column a rule refers to (org, read, masks, encrypted, contexts) must exist in rel;
 * listed but unreferenced columns may be missing; rel's columns the policy does not list become
 * POLICY_OMIT. Returns 0 and a new binding in *out (caller owns: policy_bound_destroy; it keeps
 * pointers into t, not into rel), -EINVAL with err ("relation public.events: no column
 * 'contact_id' (used by the policy)"), or -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int policy_bind(const policy_table *t, const relation *rel,
                                                    policy_bound **out, char err[POLICY_ERROR_MAX]);

/* Frees a binding. Safe on NULL. */
void policy_bound_destroy(policy_bound *b);

/* The bound table, the number of tuple columns it expects (rel->ncols at binding), the tuple
 * position of the org column, and the POLICY_* flags above. */
const policy_table *policy_bound_table(const policy_bound *b);
int policy_bound_ncols(const policy_bound *b);
int policy_bound_org_column(const policy_bound *b);
unsigned policy_bound_flags(const policy_bound *b);

/* Tuple positions of every column some rule of the table compares with the viewer's uid
 * (ascending, distinct); returns their count and sets *cols (owned by b). Audience grouping:
 * for one row, all viewers with the same rank and bypass flag whose uid equals none of these
 * columns' values get the same decisions; only viewers named by those values need their own. */
size_t policy_bound_uid_columns(const policy_bound *b, const int **cols);

/* Tuple position of the AAD context column for the encrypted column at position col, or -1
 * (not encrypted, or encrypted without context: decrypt with an empty context). */
int policy_bound_context_column(const policy_bound *b, int col);

/* Decides whether the row tuple (policy_bound_ncols values) is visible to v: bypass, or the
 * org column is not NULL and v->rank > 0 and the read rule is TRUE. Returns 0 and *visible,
 * or -ENODATA when the decision depends on a column the tuple does not carry, -EINVAL (privacy()
 * without subject_rank), or subject_rank's error; *visible is written only on success.
 * Allocation-free; does not block. */
__attribute__((warn_unused_result)) int policy_row_visible(const policy_bound *b,
                                                           const change_value *tuple,
                                                           const policy_viewer *v, bool *visible);

/* For a row policy_row_visible found visible to v, writes one policy_action per tuple column
 * into actions[0..policy_bound_ncols). Masks and decryption conditions are evaluated here only
 * (each distinct condition once). Same returns as policy_row_visible; actions is written only on
 * success. Allocation-free; does not block. */
__attribute__((warn_unused_result)) int policy_row_columns(const policy_bound *b,
                                                           const change_value *tuple,
                                                           const policy_viewer *v,
                                                           policy_action *actions);

/* ---- the binding cache ---------------------------------------------------------------------- */

/* Returns 0 and a new, empty cache of bindings of p's tables in *out (caller owns:
 * policy_cache_destroy, before policy_destroy), or -ENOMEM. A cache serves the relations of
 * one relcache: when that relcache is destroyed and recreated, destroy and recreate the cache
 * too (relation versions restart). Not thread-safe: one thread (the loop) owns it. */
__attribute__((warn_unused_result)) int policy_cache_create(const policy *p, policy_cache **out);

/* Frees the cache and every binding in it. Safe on NULL. */
void policy_cache_destroy(policy_cache *c);

/* The binding for rel, made on first use and again whenever rel is another relation or
 * version than last time. Returns 0 and *out (NULL when rel's table is not governed: deny it),
 * or -EINVAL with err when the table cannot be bound (the failure is cached per version and
 * reported again identically), or -ENOMEM. *out is valid until the next policy_cache_get for
 * the same table or policy_cache_destroy. Does not block; allocates only when binding. */
__attribute__((warn_unused_result)) int policy_cache_get(policy_cache *c, const relation *rel,
                                                         const policy_bound **out,
                                                         char err[POLICY_ERROR_MAX]);

/* ---- values ---------------------------------------------------------------------------------- */

/* Appends s[0..len) masked to its last four characters: every UTF-8 character but the last four
 * becomes '*'; a value of four characters or fewer is appended unchanged. Identical to the SQL
 * function walcast.mask_last4(text) for valid UTF-8 (characters are code points, as in
 * PostgreSQL's length() on a UTF8 database). A NULL value is the caller's: it stays NULL.
 * Returns 0 or -ENOMEM (out unchanged then). Does not block. */
__attribute__((warn_unused_result)) int policy_mask_last4(buf *out, const char *s, size_t len);

/* Converts any text PostgreSQL's uuid input accepts (32 hex digits of either case, a hyphen
 * allowed after any group of four, optionally in braces) to the canonical form PostgreSQL
 * outputs, lower-case "8-4-4-4-12", NUL-terminated in out. Returns 0, or -EINVAL when
 * PostgreSQL would refuse the text (then auth.uid() fails and such a token must be refused).
 * Does not block. */
__attribute__((warn_unused_result)) int policy_uuid_canonical(const char *in, size_t len,
                                                              char out[POLICY_UUID_TEXT_LEN + 1]);

#endif
