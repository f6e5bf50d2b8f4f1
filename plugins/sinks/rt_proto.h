/*
 * rt_proto — the wire format of the Supabase Realtime protocol (Phoenix channels) as the
 * realtime sink speaks it (docs/protocol.md): parsing a client's text frame in either serializer
 * (vsn 1.0.0: a JSON object {topic, event, payload, ref, join_ref}; vsn 2.0.0: a JSON array
 * [join_ref, ref, topic, event, payload]), reading a phx_join's postgres_changes bindings, and
 * writing server frames. No sockets, no state: the sink (realtime.c) owns those, and the fuzz
 * target (tests/fuzz/fuzz_rt_proto.c) drives everything here with hostile bytes.
 *
 * Server frames are written in three parts so that a payload serialized once can be shared by
 * many frames: rt_frame_open (everything before the payload), the payload, rt_frame_close
 * (everything after it). Client frames are not the hot path: jansson parses them.
 */
#ifndef WALCAST_RT_PROTO_H
#define WALCAST_RT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "buf.h"

#define RT_PROTO_ERROR_MAX 256
#define RT_JOIN_MAX_BINDINGS 100 /* postgres_changes entries one phx_join may ask for */
#define RT_TOPIC_MAX 512         /* longer topics are refused */

typedef enum rt_vsn {
	RT_VSN_1 = 1, /* "1.0.0": JSON objects */
	RT_VSN_2 = 2, /* "2.0.0": JSON arrays */
} rt_vsn;

/* The serializer named by the vsn query parameter: NULL or "" is 1.0.0 (Phoenix's default).
 * 0 and *out, or -EINVAL for anything but "1.0.0" and "2.0.0". */
__attribute__((warn_unused_result)) int rt_vsn_parse(const char *text, rt_vsn *out);

/* One client frame. join_ref and ref are kept as sent (a string, a number or null: NULL) so
 * that a reply echoes them exactly. */
typedef struct rt_msg {
	json_t *join_ref; /* owned; NULL = null */
	json_t *ref;      /* owned; NULL = null */
	char *topic;      /* owned, NUL-terminated, at most RT_TOPIC_MAX bytes */
	char *event;      /* owned */
	json_t *payload;  /* owned; an object (a missing or null payload becomes {}) */
} rt_msg;

/* Parses the text frame data[0..len) in serializer vsn. Returns 0 and fills *out (release with
 * rt_msg_fini), -EINVAL with err saying what is wrong (not JSON, not the serializer's shape, a
 * topic or event that is not a string, a payload that is not an object), or -ENOMEM. *out is
 * written only on success. Does not block. */
__attribute__((warn_unused_result)) int rt_msg_parse(rt_vsn vsn, const char *data, size_t len,
                                                     rt_msg *out, char err[RT_PROTO_ERROR_MAX]);

/* Parses a binary frame of vsn 2.0.0: realtime-js's user broadcast push (kind 3: kind, then
 * the lengths of join_ref, ref, topic, user event and metadata, an encoding byte, those five
 * strings, then the user's payload). Fills *out with event "broadcast", the refs and the topic
 * (the user's event and payload are not kept: walcast only answers them). 0, -EINVAL with err
 * for anything else or a truncated frame, -ENOMEM. */
__attribute__((warn_unused_result)) int rt_msg_parse_binary(const unsigned char *data, size_t len,
                                                            rt_msg *out, char err[RT_PROTO_ERROR_MAX]);

/* Releases what rt_msg_parse filled; safe on a zeroed struct. */
void rt_msg_fini(rt_msg *m);

/* ---- phx_join ------------------------------------------------------------------------------ */

/* One postgres_changes binding of a join, as the client asked for it. */
typedef struct rt_binding {
	json_t *params;   /* the entry as sent (echoed in the reply with its id); owned */
	const char *event;  /* "*", "INSERT", "UPDATE" or "DELETE" (any case; borrowed from params) */
	const char *schema; /* "*" or a schema name; NULL = "*"; borrowed */
	const char *table;  /* "*" or a table name; NULL = every table; borrowed */
	const char *filter; /* NULL or "" = none; borrowed */
	const char **select; /* column names (borrowed), NULL when the entry has no select */
	size_t nselect;
	unsigned events;   /* RT_EV_* bits the binding wants */
} rt_binding;

enum { RT_EV_INSERT = 1u << 0, RT_EV_UPDATE = 1u << 1, RT_EV_DELETE = 1u << 2 };

typedef struct rt_join {
	rt_binding *bindings; /* owned */
	size_t n;
	const char *access_token; /* NULL when the payload has none; borrowed from the payload */
	bool presence;            /* config.presence.enabled is true */
	bool is_private;          /* config.private is true */
	json_t *payload;          /* a reference to the join's payload (the borrowed strings live here);
	                           * NULL once compacted */
	char *strings;            /* owned: the bindings' strings once compacted (rt_join_compact) */
} rt_join;

/* Reads a phx_join payload: {config: {postgres_changes: [{event, schema, table, filter,
 * select}], broadcast, presence, private}, access_token}. Returns 0 and fills *out (release with
 * rt_join_fini), -EINVAL with reason (the text of the refused join's reply) when an entry is
 * not an object, an event is not one of "*"/INSERT/UPDATE/DELETE, a name is not a string, or
 * there are more than RT_JOIN_MAX_BINDINGS entries, or -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int rt_join_parse(json_t *payload, rt_join *out,
                                                      char reason[RT_PROTO_ERROR_MAX]);

/* Releases what rt_join_parse filled; safe on a zeroed struct. */
void rt_join_fini(rt_join *j);

/* Keeps of a parsed join only what a joined channel needs: the bindings' strings (event,
 * schema, table, filter, select) are copied into one block and the payload and each binding's
 * params are released (access_token and params become NULL: rt_join_response needs them, so it
 * comes first). A joined channel's memory is mostly the parsed JSON otherwise. 0 (also when
 * already compacted), or -ENOMEM with j unchanged. */
__attribute__((warn_unused_result)) int rt_join_compact(rt_join *j);

/* Appends the response object of a successful join to out: {"postgres_changes":[entry i with
 * "id": ids[i], ...]} in request order (each entry as the client sent it, so realtime-js's
 * positional match succeeds). 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int rt_join_response(buf *out, const rt_join *j,
                                                         const int64_t *ids);

/* ---- server frames ------------------------------------------------------------------------- */

/* What surrounds a payload: the serializer, the refs (NULL = null), topic and event. */
typedef struct rt_head {
	rt_vsn vsn;
	const json_t *join_ref;
	const json_t *ref;
	const char *topic;
	const char *event;
} rt_head;

/* Appends everything of h's frame before its payload. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int rt_frame_open(buf *out, const rt_head *h);

/* Appends everything of h's frame after its payload. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int rt_frame_close(buf *out, const rt_head *h);

/* Appends a whole frame: open, payload (payload_len bytes of JSON), close. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int rt_frame_write(buf *out, const rt_head *h,
                                                       const char *payload, size_t payload_len);

/* Appends the phx_reply to message m: {"status":status,"response":response} where response is
 * JSON text (NULL: {}). 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int rt_reply_write(buf *out, rt_vsn vsn, const rt_msg *m,
                                                       const char *status, const char *response);

/* Appends the phx_reply refusing message m with {"reason": reason}. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int rt_reply_error(buf *out, rt_vsn vsn, const rt_msg *m,
                                                       const char *reason);

/* Appends a `system` push on topic (refs null): {"extension":extension,"status":status,
 * "message":message} plus "channel":channel when channel is not NULL. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int rt_system_write(buf *out, rt_vsn vsn, const char *topic,
                                                        const char *extension, const char *status,
                                                        const char *message, const char *channel);

/* The reply a message needs that does not depend on any connection state, for the events that
 * have one: heartbeat on topic phoenix (ok); a message on a topic the connection has not joined
 * is the caller's business. Appends the reply and returns 1, or returns 0 when m is not such a
 * message (nothing appended), or -ENOMEM. */
__attribute__((warn_unused_result)) int rt_reply_stateless(buf *out, rt_vsn vsn, const rt_msg *m);

#endif
