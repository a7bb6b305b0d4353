"""A tiny hand-written sentiment set for the prompt tuning example.

Every sentence was written for promptswap. Reviews cover products, films and restaurants;
about a third avoid the obvious words ("great", "terrible") and lean on negation, faint
praise, sarcasm or a complaint that turns into a recommendation, so a keyword count is not enough.
"""

from __future__ import annotations

TEMPLATE = "Review: {input}\nSentiment:"

# Both verbalizers are a single token for SmolLM2's tokenizer (ids 2731 and 3524).
LABELS: dict[str, str] = {"positive": " positive", "negative": " negative"}

TRAIN: list[tuple[str, str]] = [
    # products
    ("The kettle boils in under a minute and the handle never gets hot.", "positive"),
    ("Battery died on the second day and support never answered my emails.", "negative"),
    ("These headphones are so comfortable I forget I am wearing them.", "positive"),
    ("The zipper broke the first time I opened the bag.", "negative"),
    ("I bought a second one for my sister after a month of using mine.", "positive"),
    ("Looks nice in the photos, but the real thing feels like cheap plastic.", "negative"),
    ("Setup took five minutes and it has worked flawlessly ever since.", "positive"),
    ("It charges, eventually, if you leave it plugged in overnight and pray.", "negative"),
    ("I expected a gimmick, yet this blender is now the most used thing in my kitchen.", "positive"),
    ("The instructions were missing and two screws did not fit any hole.", "negative"),
    ("Not the cheapest option, but worth every penny.", "positive"),
    ("I wanted to love this lamp; it flickers constantly.", "negative"),
    ("The shoes needed no breaking in and my feet stay dry in the rain.", "positive"),
    ("Returned it within a week.", "negative"),
    ("Smaller than I imagined, which turned out to be perfect for my desk.", "positive"),
    ("The app logs me out every few minutes and forgets all my settings.", "negative"),
    # films
    ("A warm, funny film that had the whole theatre clapping at the end.", "positive"),
    ("Two and a half hours of characters staring out of windows.", "negative"),
    ("The lead actress carries every scene with quiet confidence.", "positive"),
    ("I checked my watch more often than I watched the screen.", "negative"),
    ("I did not expect a film about accountants to make me cry, but it did.", "positive"),
    ("The plot twist was obvious from the trailer.", "negative"),
    ("I have already bought tickets to see it again with my parents.", "positive"),
    ("Beautiful posters, shame about the movie.", "negative"),
    ("Every joke lands and the soundtrack is still stuck in my head.", "positive"),
    ("The dialogue sounds like it was written by someone who has never met a person.", "negative"),
    ("Slow at first, then it grabs you and never lets go.", "positive"),
    ("My kids walked out halfway through, and honestly I envied them.", "negative"),
    ("The sequel somehow manages to be better than the original.", "positive"),
    ("Loud, long and entirely forgettable.", "negative"),
    ("It is hard to find fault with a single frame of this film.", "positive"),
    ("The special effects could not hide how empty the story was.", "negative"),
    # restaurants
    ("The pasta tasted like it was made by someone's grandmother.", "positive"),
    ("We waited forty minutes for cold soup.", "negative"),
    ("Friendly staff, generous portions and the best bread in town.", "positive"),
    ("The waiter rolled his eyes when we asked for water.", "negative"),
    ("We have booked the same table for our anniversary three years running.", "positive"),
    ("The menu promised fresh fish; the fish disagreed.", "negative"),
    ("A tiny place with no sign outside, and I would not tell anyone else about it if I could help it.", "positive"),
    ("Overpriced, underseasoned and strangely sticky tables.", "negative"),
    ("The chef came out to ask how we liked the meal, and we honestly loved it.", "positive"),
    ("I have had better burgers from a gas station.", "negative"),
    ("Nothing fancy, but I leave full and happy every single time.", "positive"),
    ("The dessert was the only thing we finished, and it came from a packet.", "negative"),
    ("Even the house salad was worth writing home about.", "positive"),
    ("They charged us for bread we never received.", "negative"),
    ("It is noisy and cramped, and I would still queue for their dumplings.", "positive"),
    ("After the third visit I finally accepted that the food is just bland.", "negative"),
]

TEST: list[tuple[str, str]] = [
    # products
    ("The vacuum picks up dog hair that my old one left behind for years.", "positive"),
    ("The screen cracked while sitting on my nightstand.", "negative"),
    ("I was sceptical, but the mattress fixed my back pain within a week.", "positive"),
    ("Great idea on paper; in practice the lid leaks every time.", "negative"),
    ("Arrived a day early and works exactly as described.", "positive"),
    ("The printer wants a new cartridge every twenty pages.", "negative"),
    ("My third one of these, and I will buy a fourth when this wears out.", "positive"),
    ("The strap left a rash on my wrist after one afternoon.", "negative"),
    # films
    ("By the last scene nobody in the cinema was reaching for their phone.", "positive"),
    ("A talented cast wasted on a script that goes nowhere.", "negative"),
    ("Quietly devastating and beautifully shot.", "positive"),
    ("I fell asleep twice and did not miss anything.", "negative"),
    ("I still think about the ending weeks later.", "positive"),
    ("The trailer contains every good moment of the film.", "negative"),
    ("Funny, clever and far shorter than it feels, in the best way.", "positive"),
    ("Even the popcorn was more gripping.", "negative"),
    # restaurants
    ("We ordered a second round of the tacos before finishing the first.", "positive"),
    ("The steak arrived grey and the fries were soggy.", "negative"),
    ("The owner remembered our names on our second visit.", "positive"),
    ("We left hungry and forty dollars poorer.", "negative"),
    ("Not much to look at, but the curry is the real thing.", "positive"),
    ("The only memorable part of the evening was the bill.", "negative"),
    ("Reservations are hard to get, and now I understand why.", "positive"),
    ("I would rather cook at home, and I cannot cook.", "negative"),
]
