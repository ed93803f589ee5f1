from django import forms
from django.utils.text import slugify

from .models import Room


class RoomForm(forms.Form):
    name = forms.CharField(max_length=80, strip=True)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        slug = slugify(name)
        if not slug:
            raise forms.ValidationError("A room name needs at least one letter or digit.")
        if (
            Room.objects.filter(name__iexact=name).exists()
            or Room.objects.filter(slug=slug).exists()
        ):
            raise forms.ValidationError("A room with this name already exists.")
        return name
