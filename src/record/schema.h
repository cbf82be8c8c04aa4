/* Internal to src/record: schema text shared by the drivers. */
#ifndef KL_SCHEMA_H
#define KL_SCHEMA_H

#define KL_SCHEMA_VERSION 10
extern const char *const kl_schema_v1;
extern const char *const kl_schema_v2;
/* migrations 3 and 9 each drop an index (_drop) and build another (_index) */
extern const char *const kl_schema_v3_drop;
extern const char *const kl_schema_v3_index;
extern const char *const kl_schema_v4;
extern const char *const kl_schema_v5_sqlite;
extern const char *const kl_schema_v5_pg;
/* columns added after migration 1, each "name TEXT" */
#define KL_SCHEMA_NLATE 3
extern const char *const kl_schema_late_columns[KL_SCHEMA_NLATE];
/* a BIGINT column added to quota_buckets */
extern const char *const kl_schema_v8_table;
extern const char *const kl_schema_v8_column;
extern const char *const kl_schema_v9_drop;
extern const char *const kl_schema_v9_index;
extern const char *const kl_schema_v10;

#endif
