import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models


def refuse_identifiers_differing_only_in_case(apps, schema_editor):
    """Patients whose identifiers differ only in case would stop this migration with a database error: name them."""
    from django.db.models import Count
    from django.db.models.functions import Lower

    Patient = apps.get_model("patients", "Patient")
    twins = (Patient.objects.annotate(key=Lower("identifier")).values("lab_id", "key")
             .annotate(n=Count("id")).filter(n__gt=1))
    if twins:
        names = "; ".join(
            ", ".join(repr(i) for i in sorted(Patient.objects.filter(lab_id=t["lab_id"], identifier__iexact=t["key"])
                                              .values_list("identifier", flat=True))) + f" (lab {t['lab_id']})"
            for t in twins)
        raise RuntimeError("Patient identifiers are now one patient whatever their case, and these differ only in case: "
                           f"{names}. Rename or merge them (manage.py shell), then migrate again.")


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
        ('patients', '0002_deletion'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(refuse_identifiers_differing_only_in_case, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name='patient',
            name='patient_identifier_unique_per_lab',
        ),
        migrations.AddConstraint(
            model_name='patient',
            constraint=models.UniqueConstraint(models.F('lab'), django.db.models.functions.text.Lower('identifier'), name='patient_identifier_unique_per_lab', violation_error_message='A patient with this identifier already exists in your lab.'),
        ),
    ]
