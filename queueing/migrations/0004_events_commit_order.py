from django.db import migrations

# Readers follow events in commit order with a snapshot cursor (docs/live.md): each
# event carries the id of the transaction that wrote it. It is a plain column with a
# database default, not a model field, so no write path can forget or fake it.
# Existing rows all get this migration's xid, which every later cursor sees as done.


class Migration(migrations.Migration):
    dependencies = [
        ("queueing", "0003_drop_redundant_indexes"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE queueing_orderevent "
            "ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id()",
            reverse_sql="ALTER TABLE queueing_orderevent DROP COLUMN xid",
        ),
        migrations.RunSQL(
            "CREATE INDEX event_by_xid ON queueing_orderevent (xid)",
            reverse_sql="DROP INDEX event_by_xid",
        ),
    ]
