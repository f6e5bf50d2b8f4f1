/*
 * policy_sql — generates the database side of the policy from its compiled form: the helper
 * functions (walcast.role_rank, user_rank, contact_min_rank, mask_last4, is_bypass), one
 * `FOR SELECT TO authenticated` row-level security policy per governed table, and one masking
 * view per table (walcast.<table>_masked, security_invoker, masks applied), as one migration
 * that can be applied again at any time. The output is deterministic: the same policy gives the
 * same bytes on every run (deploy/migrations/20261122000300_rls_policies.sql is this output for
 * deploy/policy.ini, and a unit test keeps the two identical).
 *
 * NULLs: every atom is rendered so that SQL's three-valued logic gives what policy_program_eval
 * gives (rank and privacy terms are never NULL; `col = (select auth.uid())` is NULL exactly when
 * EQ_UID is UNKNOWN), and a NULL at the top denies in both (USING, CASE WHEN).
 */
#ifndef WALCAST_POLICY_SQL_H
#define WALCAST_POLICY_SQL_H

#include <stddef.h>

#include "buf.h"
#include "policy.h"

/* Appends the whole migration for p to out. source names the policy file in the header comment
 * (e.g. "deploy/policy.ini"; pass the same string every time for identical output). Returns 0
 * or -ENOMEM (out then holds a partial text). Does not block. */
__attribute__((warn_unused_result)) int policy_sql_write(buf *out, const policy *p,
                                                         const char *source);

/* Loads the policy file at path and appends its migration to out, naming path in the header.
 * Returns 0, or the negative error of policy_load_file with err set ("path:line: reason"), or
 * -ENOMEM. Reads the file; this is what `walcast policy sql [--policy FILE]` runs. */
__attribute__((warn_unused_result)) int policy_sql_generate_file(const char *path, buf *out,
                                                                 char err[POLICY_ERROR_MAX]);

/* Appends a rule of table t (a program whose column arguments are indexes in t's `columns`,
 * e.g. policy_table_read or a column rule's cond) as an SQL boolean expression. Operands of
 * `and` / `or` after the first go on new lines aligned with the column where the expression
 * starts (the current end of out). Returns 0 or -ENOMEM; -EINVAL for a program that fails
 * policy_program_check. Does not block. */
__attribute__((warn_unused_result)) int policy_sql_rule(buf *out, const policy *p,
                                                        const policy_table *t,
                                                        const policy_insn *prog, size_t n);

/* Appends the same rule in the policy file's language, on one line (e.g. "viewer and
 * (user_id = uid or privacy(contact_id))"). Same returns as policy_sql_rule. */
__attribute__((warn_unused_result)) int policy_sql_rule_source(buf *out, const policy *p,
                                                               const policy_table *t,
                                                               const policy_insn *prog, size_t n);

/* Appends an identifier as SQL: as is, or double-quoted when it is a PostgreSQL keyword that
 * cannot stand unquoted (e.g. "order", "user"). Identifiers from a loaded policy are always
 * lower-case [a-z_][a-z0-9_$]*. Returns 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int policy_sql_ident(buf *out, const char *ident);

#endif
