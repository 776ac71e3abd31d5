"""Words and music: a songwriter's lyrics split into syllables and stresses (CMUdict, with a
rule-based fallback), and the rhythm plan that sets one note onset per syllable, stressed syllables
on strong beats, a breath between lines, which the melody sampler then fills with pitches."""
