"""Images stored sideways with an EXIF turn (a camera's JPEG) kept their stored size; their cells'
boxes are in upright pixels, as the analysis reads the image and browsers show it. Record the upright size."""
from django.db import migrations


def upright_sizes(apps, schema_editor):
    from PIL import Image

    from ml.imageio import upright_size

    SlideImage = apps.get_model("slides", "SlideImage")
    for image in SlideImage.objects.only("id", "file", "width", "height").iterator():
        try:
            with image.file.open("rb") as fh, Image.open(fh) as im:
                width, height = upright_size(im)
        except (OSError, ValueError, SyntaxError):  # a file gone missing keeps its row as it is
            continue
        if (width, height) != (image.width, image.height) and (width, height) == (image.height, image.width):
            SlideImage.objects.filter(pk=image.pk).update(width=width, height=height)


class Migration(migrations.Migration):

    dependencies = [
        ("slides", "0003_slideimage_tile_levels"),
    ]

    operations = [
        migrations.RunPython(upright_sizes, migrations.RunPython.noop),
    ]
