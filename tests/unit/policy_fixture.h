/* policy_fixture — the policy-file preamble (roles, membership, privacy sources) that the policy
 * unit tests build their cases on. ROLES is 8 lines, PRIVACY 4: tests that expect errors on a
 * given line count on it. */
#ifndef WALCAST_TEST_POLICY_FIXTURE_H
#define WALCAST_TEST_POLICY_FIXTURE_H

#define ROLES                                                                                  \
	"[roles]\n"                                                                                \
	"ranks = viewer, member, analyst, admin, owner\n"                                          \
	"bypass = service_role\n"                                                                  \
	"[membership]\n"                                                                           \
	"table = public.org_roles\n"                                                               \
	"org = org_id\n"                                                                           \
	"user = user_id\n"                                                                         \
	"role = role\n"
#define PRIVACY                                                                                \
	"[privacy]\n"                                                                              \
	"table = public.privacy_rules\n"                                                           \
	"subject = contact_id\n"                                                                   \
	"min_role = min_role\n"

#endif
