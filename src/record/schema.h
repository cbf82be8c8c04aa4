/* Internal to src/record: schema text shared by the drivers. */
#ifndef KL_SCHEMA_H
#define KL_SCHEMA_H

#define KL_SCHEMA_VERSION 6
extern const char *const kl_schema_v1;
extern const char *const kl_schema_v2;
extern const char *const kl_schema_v3;
extern const char *const kl_schema_v4;
extern const char *const kl_schema_v5_sqlite;
extern const char *const kl_schema_v5_pg;
extern const char *const kl_schema_v6_sqlite;
extern const char *const kl_schema_v6_pg;

#endif
