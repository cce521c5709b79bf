from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('queueing', '0003_drop_redundant_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='notifierstatus',
            name='lease_expires_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='notifierstatus',
            name='term',
            field=models.BigIntegerField(default=0),
        ),
        # The notifier's terms come from a sequence owned by no column, so deleting the
        # status row (or flushing the tables) never lets a term be handed out twice.
        migrations.RunSQL(
            'CREATE SEQUENCE queueing_notifier_term',
            'DROP SEQUENCE queueing_notifier_term',
        ),
    ]
