#!/usr/bin/env python3
"""Synthetic business messages with gold fields, for the CRF field extractor.

Five kinds of message (order confirmations, invoices, shipping notices,
support emails, refund requests), each written from one of 15 phrasings
(templates).  The phrasings of each kind are split into "seen" and "unseen"
so that an extractor trained on the seen ones can be tested on contexts it
never saw; value formats are shared by both halves.  Standard library only;
the same seed gives byte-identical output.

    gen_messages.py --seed N --count N [--phrasings seen|unseen|all]
                    [--kinds k1,k2] [--format csv|tsv] [--out FILE] [--check]
    gen_messages.py --list-templates

csv: header input,fields,kind,template; fields is a JSON object of the fields
present.  tsv: input, then field TAB value pairs, all TAB-separated, with
backslash escapes (\\\\, \\n, \\t, \\r); no header.  See README.md.
"""

import argparse
import csv
import datetime
import io
import json
import random
import re
import sys
import unicodedata

FIELDS = ["order_id", "amount", "currency", "date", "email", "phone",
          "tracking_number", "product", "customer_name"]
KINDS = ["order_confirmation", "invoice", "shipping_notice",
         "support_email", "refund_request"]

MIN_FIELDS = 3
MAX_FIELDS = 7
P_OPTIONAL = 0.6          # share of optional template units kept
P_NORMALIZED = 0.2        # share of rows whose amount gold is normalized
P_CURRENCY = 0.85         # share of {money} slots written with a currency

# Noise: the probability that a message gets each kind of noise.
P_TYPO = 0.25
P_RECASE = 0.08
P_BLANK = 0.15
P_SPACE = 0.15
P_SIGNATURE = 0.2
P_QUOTE = 0.1
P_FORWARD = 0.06
P_DISTRACTOR = 0.3

# ---------------------------------------------------------------- pools

FIRST_NAMES = """
James Olivia Michael Emma William Sophia Benjamin Charlotte Henry Amelia
Jack Grace Samuel Chloe Daniel Hannah Ethan Lily Thomas Megan
María José Lucía Alejandro Carmen Diego Sofía Javier Valentina Mateo
Camila Andrés Isabel Joaquín Paula Ximena Guadalupe Rodrigo
João Beatriz Rafael Inês Tiago Mariana
Camille Julien Élodie Mathieu Amélie Étienne Margaux
Lukas Anna Felix Leonie Jürgen Katrin Maximilian Greta
Giulia Marco Francesca Luca Chiara Alessandro
Sanne Daan Femke Joost
Søren Ingrid Astrid Lars Freja Björn Sigrid Øyvind Aino Mikko
Katarzyna Piotr Agnieszka Tomasz Zofia Wojciech Tereza Jakub
Dmitri Olga Natalia Sergei Oksana Andriy Yulia
Eleni Nikos Dimitra Yannis
Emre Ayşe Mehmet Elif Murat Zeynep
Omar Fatima Youssef Layla Khaled Nour Ahmed Amira Tariq Yasmin
Reza Shirin Dariush Parisa
Noa Eitan Tamar Yael
Priya Arjun Ananya Rohan Kavya Vikram Deepa Sanjay Lakshmi Rahul Aditi
Imran Ayesha Farhan Nusrat
Wei Xiaoming Mei Jun Yan Hao Lin Zhiwei Xin Jing
Haruto Yui Takeshi Aiko Kenji Sakura Ren Hina
Min-jun Seo-yeon Ji-woo Hyun-woo Eun-ji
Minh Linh Thanh Huong Quang
Maricel Dewi Budi Siti Putri Rizal
Chinedu Ngozi Oluwaseun Adaeze Kwame Ama Kofi Abena Wanjiru Kamau Amara
Tendai Thandiwe Sipho Abebe Selam Moussa Aminata Fatou
Siobhan Aoife Niamh Ciarán Eoin Seamus Fiona Callum
Keanu Leilani Tiana Manaia
""".split()

LAST_NAMES = [n.replace("_", " ") for n in """
Smith Johnson Williams Brown Taylor Wilson Clarke Walker Hughes Bennett
Turner Foster Harris Mitchell Cooper Reed Ward Price
O'Brien O'Connor McCarthy Murphy Kelly MacLeod Fitzgerald Gallagher Doyle
García Rodríguez López Martínez Hernández González Pérez Sánchez Ramírez
Torres Flores Morales Castillo Ortega Navarro Delgado Vargas
Silva Santos Oliveira Costa Pereira Ferreira Almeida Carvalho
Dubois Lefèvre Moreau Laurent Girard Rousseau Fontaine Chevalier Bonnet
Müller Schneider Fischer Weber Becker Hoffmann Schäfer Koch Zimmermann Krüger
Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci De_Luca D'Angelo
de_Vries van_Dijk Jansen Bakker Visser van_den_Berg
Andersen Nielsen Johansson Lindqvist Hansen Berg Eriksson Haugen Virtanen
Korhonen
Kowalski Nowak Wiśniewska Wójcik Kamińska Lewandowski Zieliński Novák Dvořák
Ivanov Petrova Smirnov Kuznetsova Popov Shevchenko Kovalenko Bondarenko
Papadopoulos Georgiou Nikolaidis Konstantinou
Yilmaz Kaya Demir Şahin Çelik Aydin
Haddad Khalil Mansour Nasser Saleh Hussein Rahman Farouk El-Amin Al-Sayed Aziz
Tehrani Karimi Hosseini Moradi
Cohen Levi Mizrahi Friedman Katz
Sharma Patel Singh Gupta Iyer Reddy Nair Kapoor Mehta Chatterjee Banerjee
Desai Joshi Rao Krishnan Menon
Khan Chowdhury Qureshi Hossain
Wang Li Zhang Liu Chen Yang Huang Zhao Wu Zhou Xu Sun Ma Guo
Sato Suzuki Takahashi Tanaka Watanabe Yamamoto Nakamura Kobayashi Ito
Kim Lee Park Choi Jung Kang Yoon
Nguyen Tran Le Pham Hoang Vu
Reyes Cruz Bautista Mendoza Villanueva Wijaya Susanto Hidayat
Okafor Adeyemi Okonkwo Mensah Boateng Owusu Mwangi Otieno Njoroge Ndlovu
Dlamini Mokoena Tesfaye Haile Diallo Traoré Ba Ouédraogo Banda Phiri
Kahale Akana
""".split()]

STORES = ["Northwind Traders", "Bluebird Outfitters", "Harbor & Pine",
          "Kestrel Home", "Lumen Electronics", "Meadowlark Market",
          "Pinecrest Supply", "Copperleaf", "Brightside Kitchen",
          "Fjord Living", "Sakura Stationery", "Atlas Sports",
          "Marigold Beauty", "Quill & Ink", "Tallgrass Pets", "Orbit Gadgets"]

BRANDS = ["Acme", "Nordik", "Solano", "Verdant", "Kiruna", "Bellhaven",
          "Tidewater", "Zephyr", "Aurora", "Cobalt", "Mistral", "Halcyon",
          "Juniper", "Oakridge", "Sierra", "Tamarind", "Vireo", "Wrenfield",
          "Yuzu", "Ember", "Granite", "Lark", "Pebble", "Roam", "Soleil",
          "Terra", "Umber", "Nimbus", "Kodiak", "Lotus", "Maison Rêve",
          "Blue Heron", "Fox & Finch", "Hollow Creek"]
ADJECTIVES = ["Organic", "Wireless", "Stainless", "Ergonomic", "Classic",
              "Deluxe", "Compact", "Waterproof", "Bamboo", "Cotton",
              "Ceramic", "Vintage", "Ultra", "Pro", "Mini", "Smart",
              "Portable", "Merino", "Recycled", "Matte", "Noise-Cancelling",
              "Insulated", "Lightweight", "Handmade", "Unscented", "Green",
              "Black", "Navy", "Rose Gold", "Extra Large"]
# Product nouns by family, each family with the sizes that fit it.
PRODUCT_FAMILIES = [
    (["Green Tea", "Coffee Beans", "Olive Oil", "Face Serum", "Hand Cream",
      "Honey", "Dark Chocolate", "Shampoo", "Protein Powder"],
     ["500g", "1kg", "250ml", "1L", "12oz", "3-Pack", "100 Count"]),
    (["Hoodie", "Running Shoes", "Socks", "Rain Jacket", "Scarf", "T-Shirt",
      "Sneakers", "Leggings"],
     ["XL", "Size M", "Size S", "Size 9", "2-pack", "EU 42"]),
    (["Headphones", "Earbuds", "Keyboard", "Smartwatch", "Speaker",
      "Charging Cable", "Monitor", "Phone Case", "Power Bank", "USB Hub"],
     ["32GB", "Gen 2", "V3", "27-inch", "2m", "Mk II", "10000mAh"]),
    (["Throw Blanket", "Bath Towel", "Duvet Cover", "Candle", "Plant Pot",
      "Wall Clock", "Desk Lamp", "Dog Bed", "Cat Tree", "Yoga Mat"],
     ["King", "40x60cm", "Large", "2-pack", "Set of 4"]),
    (["Frying Pan", "Teapot", "Chef's Knife", "Kettle", "Rice Cooker",
      "Blender", "Espresso Machine", "Air Fryer", "Water Bottle"],
     ["6-piece", "28cm", "1.7L", "750ml", "4-Quart"]),
    (["Notebook", "Fountain Pen", "Jigsaw Puzzle", "Board Game", "Backpack",
      "Tote Bag", "Tennis Racket", "Sunglasses"],
     ["A5", "1000-piece", "20L", "Set of 3", "Pro Edition"]),
]

DOMAINS = ["example.com", "example.net", "example.org", "mail.example.com",
           "inbox.example", "post.example", "mailbox.test", "webmail.test",
           "home.example.net", "uni.example", "corp.example.org", "fastmail.test"]
HANDLE_WORDS = ["sunny", "bluefox", "coffee", "nightowl", "tiger", "maple",
                "pixel", "river", "stormy", "lucky", "garden", "rocket"]

CARRIERS = {"ups": "UPS", "usps": "USPS", "dhl": "DHL", "fedex": "FedEx",
            "royalmail": "Royal Mail", "jd": "DHL Express", "chinapost": "China Post"}

MONTHS = ["January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
            "Saturday", "Sunday"]

CURRENCY_SYMBOL = {"USD": "$", "EUR": "€", "GBP": "£"}

# Fillers: words around the values, shared by every phrasing.
HI_B = ["Hello,", "Hi there,", "Dear customer,", "Greetings from {store},",
        "Hello from the {store} team,", "Good day,", "Hi,"]
BYE_B = ["Thank you for shopping with us.", "Thanks for choosing {store}!",
         "We appreciate your business.", "Happy shopping!",
         "Thank you for your order.", "Have a great day!"]
TEAM = ["The {store} Team", "{store} Customer Service", "{store} Support",
        "Your friends at {store}", "{store}"]
HI_C = ["Hi,", "Hello,", "Hi team,", "Hello {store} support,",
        "Good morning,", "Good afternoon,", "To whom it may concern,",
        "Dear Sir or Madam,", "Hey,", "Hi there,"]
BYE_C = ["Thanks,", "Thank you,", "Regards,", "Best,", "Cheers,",
         "Many thanks,", "Thanks in advance,", "Kind regards,", "Best wishes,"]
REASONS = ["item not as described", "arrived damaged", "wrong size",
           "changed my mind", "wrong colour", "stopped working",
           "poor quality", "too small"]

# Noise material.  None of it holds a value of a gold field: no emails,
# dates, phone numbers, ids or amounts, and numbers stay small (at most 5, or
# "24/7", "3-5") so that they cannot be taken for an amount (amounts start at
# 12.00).
SIGNATURES_CUSTOMER = ["Sent from my iPhone", "Sent from my Android phone",
                       "Sent from Outlook for Android", "Get Outlook for iOS",
                       "Sent from Mail for Windows", "--\nSent from my tablet"]
SIGNATURES_BUSINESS = ["--\nBest regards,\n{staff}\n{store} Customer Care",
                       "--\nThis is an automated message, please do not reply.",
                       "--\n{store} | Customer Service | open 24/7",
                       "You are receiving this email because you made a purchase at {store}.",
                       "--\nKind regards,\n{staff}"]
QUOTE_HEADERS_FROM_STORE = ["{store} Support wrote:", "Earlier, {store} wrote:",
                            "Quoting the previous message:"]
QUOTE_HEADERS_FROM_CUSTOMER = ["You wrote:", "Earlier, you wrote:",
                               "Quoting your previous message:"]
QUOTE_LINES_FROM_STORE = ["Thank you for contacting us.",
                          "Is there anything else we can help with?",
                          "Your request has been received.",
                          "We will get back to you shortly."]
QUOTE_LINES_FROM_CUSTOMER = ["Hi, I have a question about my order.",
                             "Can you tell me when it will arrive?",
                             "Please let me know.", "Thanks for your help."]
# A customer forwards the store's message; an agent forwards a customer's.
FORWARD_HEADERS_STORE = ["---------- Forwarded message ---------\nFrom: {store}\nSubject: Your order\n\n",
                         "Begin forwarded message:\n\nFrom: {store} Orders\nSubject: Fwd: update\n\n",
                         "See below, can you check this?\n\n-----Original Message-----\nFrom: {store}\n\n",
                         "Fwd:\n\n"]
FORWARD_HEADERS_CUSTOMER = ["FYI, forwarding this one from the support inbox.\n\n---------- Forwarded message ---------\nSubject: Customer request\n\n",
                            "Escalating, please see below.\n\nBegin forwarded message:\n\n",
                            "Fwd:\n\n"]
DISTRACTORS_STORE = ["Item {k} of {n}", "Our support team is available 24/7.",
                     "Qty: {k}", "Please allow 3-5 business days for processing.",
                     "Box 1 of 1", "Page 1 of 2", "Free returns within thirty days.",
                     "Rated 5 stars by our customers.",
                     "Call us 24/7, we are always happy to help."]
DISTRACTORS_CUSTOMER = ["I have written {k} times about this already.",
                        "I ordered {k} of them.", "Only {k} of {n} items came.",
                        "I have been a customer for {n} years.",
                        "I waited on hold for {k} hours.", "(Step {k} of {n} on your help page did not help.)"]

# ------------------------------------------------------------ templates
#
# A template is a list of units.  A unit is text with {slot}s; a leading "?"
# makes it optional (kept with probability P_OPTIONAL, then units are added
# or dropped until the message has MIN_FIELDS to MAX_FIELDS fields), a
# leading "~" puts it in a group whose chosen units are shuffled (a key:
# value block in random order).  Slots: the field names; {money} (an amount
# with or without its currency, in one of several layouts); and the fillers
# {hi_b} {bye_b} {team} {hi_c} {bye_c} {store} {staff} {carrier} {qty}
# {reason}.  Template i of a kind is unseen when i % 3 == 2.

TEMPLATES = {}

TEMPLATES["order_confirmation"] = [
    [  # 00
        "Dear {customer_name},\n\n",
        "Thank you for your order! Your order number is {order_id}.",
        "? It was placed on {date}.",
        "\n\n",
        "?Item: {product}\n",
        "?Order total: {money}\n",
        "?A copy of this confirmation was sent to {email}.\n",
        "\n{bye_b}\n{team}\n",
    ],
    [  # 01
        "{hi_b}\n\n",
        "Your order is confirmed. Details below.\n\n",
        "~Order number: {order_id}\n",
        "~?Order date: {date}\n",
        "~?Product: {product}\n",
        "~?Total: {money}\n",
        "~?Email: {email}\n",
        "~?Phone: {phone}\n",
        "~?Name: {customer_name}\n",
        "\n{bye_b}\n",
    ],
    [  # 02 unseen
        "{store} | purchase receipt\n\n",
        "Ref: {order_id}\n",
        "?Issued {date}\n",
        "?Article - {product}\n",
        "?Sum: {money}\n",
        "?Purchaser - {customer_name}\n",
        "?Receipt copy goes to <{email}>\n",
        "\nKeep this receipt for your records.\n",
    ],
    [  # 03
        "Hi {customer_name},\n\n",
        "Great news: we have received your order #{order_id} and are getting it ready.",
        "? You ordered {product}.",
        "? Order total: {money}.",
        "\n\n",
        "?We will send shipping updates to {email}.\n\n",
        "Thanks for shopping at {store}!\n",
    ],
    [  # 04
        "{store}: order {order_id} confirmed",
        "?, total {money}",
        "?, placed {date}",
        ". ",
        "?We'll text you at {phone} when it ships. ",
        "?Item: {product}. ",
        "Reply STOP to opt out.\n",
    ],
    [  # 05 unseen
        "{customer_name}, thanks a lot!\n\n",
        "We've logged your purchase under reference {order_id}",
        "? and it came to {money}",
        ".\n",
        "?What you bought: {product}\n",
        "?Should anything be unclear we may ring you on {phone}.\n",
        "?Paperwork will land in the inbox of {email}.\n",
        "\nCheers,\n{team}\n",
    ],
    [  # 06
        "ORDER CONFIRMATION\n",
        "------------------\n",
        "Customer: {customer_name}\n",
        "Order ID: {order_id}\n",
        "?Date placed: {date}\n",
        "\nQty   Item\n",
        "{qty}     {product}\n",
        "\n",
        "?Grand total: {money}\n",
        "?Contact email: {email}\n",
        "\n{team}\n",
    ],
    [  # 07
        "Hello from {store}!\n\n",
        "We're happy to confirm order {order_id}",
        "?, placed on {date}",
        "? by {customer_name}",
        ".\n\n",
        "?Your {product} will be packed within 1-2 business days.\n",
        "?The amount of {money} has been authorized on your card.\n",
        "?Questions? Just reply to this email.\n",
        "\n{bye_b}\n",
    ],
    [  # 08 unseen
        "{hi_b}\n\n",
        "Here is a summary of what you just bought:\n\n",
        "~* reference {order_id}\n",
        "~?* bought {date}\n",
        "~?* {product}\n",
        "~?* paid {money}\n",
        "~?* inbox {email}\n",
        "~?* mobile {phone}\n",
        "?\nEnjoy it, {customer_name}!\n",
    ],
    [  # 09
        "Subject: Your {store} order {order_id}\n\n",
        "{hi_b}\n\n",
        "Thanks for your purchase. We have received order {order_id}",
        "? on {date}",
        " and will let you know when it ships.\n\n",
        "?Order summary:\n{qty} x {product}\n",
        "?Order total: {money}\n",
        "\n{bye_b}\n{team}\n",
    ],
    [  # 10
        "Thank you for ordering from {store}.\n\n",
        "Order #{order_id}",
        "? - {date}",
        "\n",
        "?{product}\n",
        "?Total charged: {money}\n",
        "\nShipping to:\n{customer_name}\n",
        "?Phone: {phone}\n",
        "?Email: {email}\n",
    ],
    [  # 11 unseen
        "Subject: [{order_id}] thanks for your purchase, {customer_name}\n\n",
        "This note acknowledges your purchase",
        "? ({date})",
        ".\n\n",
        "?Goods: {product}\n",
        "?Value: {money}\n",
        "?We have {email} on file for this purchase.\n",
        "\n{team}\n",
    ],
    [  # 12
        "{hi_b}\n\n",
        "{customer_name}, your order is in!\n\n",
        "Order number: {order_id}\n",
        "?Ordered on: {date}\n",
        "?Item: {product}\n",
        "?Total: {money}\n",
        "\n",
        "?If we need to reach you about this order we will call {phone}.\n",
        "{bye_b}\n",
    ],
    [  # 13
        "Order confirmation #{order_id}\n\n",
        "?Placed on {date}\n",
        "?Sold to: {customer_name}\n",
        "?Email: {email}\n",
        "\n",
        "?Item: {product}\n",
        "?Subtotal: {money}\n",
        "\nYou can view your order any time in your account.\n",
        "{team}\n",
    ],
    [  # 14 unseen
        "{store} - purchase overview\n\n",
        "| Field      | Value |\n",
        "|------------|-------|\n",
        "~| Booking    | {order_id} |\n",
        "~?| Bought on  | {date} |\n",
        "~?| Goods      | {product} |\n",
        "~?| You paid   | {money} |\n",
        "~?| Holder     | {customer_name} |\n",
        "~?| Mobile     | {phone} |\n",
        "\nNo action is needed on your part.\n",
    ],
]

TEMPLATES["invoice"] = [
    [  # 00
        "INVOICE\n\n",
        "~Invoice date: {date}\n",
        "~Order reference: {order_id}\n",
        "~?Customer: {customer_name}\n",
        "~?Billing email: {email}\n",
        "\n",
        "?Description: {product}\n",
        "Amount due: {money}\n",
        "\nPayment is due within two weeks.\n",
    ],
    [  # 01
        "Dear {customer_name},\n\n",
        "Please find your invoice for order {order_id} below.\n\n",
        "?Invoice date: {date}\n",
        "?Item: {product}\n",
        "Total due: {money}\n",
        "?\nWe will send the receipt to {email} once payment is received.\n",
        "\n{bye_b}\n{team}\n",
    ],
    [  # 02 unseen
        "Statement from {store}\n\n",
        "Bill to - {customer_name}\n",
        "?Remittance contact - {email}\n",
        "?Tel. {phone}\n",
        "\n",
        "Goods supplied under purchase {order_id}",
        "?, issued {date}",
        ".\n",
        "?Line - {product}\n",
        "Balance outstanding - {money}\n",
        "\nKindly settle by bank transfer.\n",
    ],
    [  # 03
        "Hello {customer_name},\n\n",
        "Your invoice for order #{order_id} is ready.",
        "? The total amount due is {money}.",
        "? It was issued on {date}.",
        "\n\n",
        "?Product: {product}\n",
        "\n{bye_b}\n",
    ],
    [  # 04
        "{store} Invoice\n",
        "Order: {order_id}\n",
        "Date: {date}\n",
        "?Customer: {customer_name}\n",
        "?Phone: {phone}\n",
        "?Email: {email}\n",
        "-----\n",
        "?{qty} x {product}\n",
        "Total: {money}\n",
        "-----\n",
        "Thank you for your business.\n",
    ],
    [  # 05 unseen
        "{customer_name},\n\n",
        "a payment of {money} is payable for purchase {order_id}",
        "? (goods: {product})",
        ".",
        "? This statement bears the date {date}.",
        "\n\n",
        "?Our accounts desk keeps {email} as your billing contact.\n",
        "\n{team}\n",
    ],
    [  # 06
        "Subject: Invoice for order {order_id}\n\n",
        "{hi_b}\n\n",
        "Attached is the invoice for your recent order.\n\n",
        "~Order number: {order_id}\n",
        "~?Invoice date: {date}\n",
        "~?Amount due: {money}\n",
        "~?Customer: {customer_name}\n",
        "\n{bye_b}\n",
    ],
    [  # 07
        "INVOICE - {store}\n\n",
        "Customer name: {customer_name}\n",
        "?Customer email: {email}\n",
        "?Customer phone: {phone}\n",
        "\nDescription                      Qty\n",
        "{product}    {qty}\n",
        "\n",
        "?Order no.: {order_id}\n",
        "?Invoice total ({currency}): {amount}\n",
        "?Date of invoice: {date}\n",
    ],
    [  # 08 unseen
        "{hi_b}\n\n",
        "The balance on purchase {order_id} comes to {money}",
        "? (the {product} we delivered)",
        ".\n",
        "?Remit before month end. Statement dated {date}.\n",
        "?Account holder: {customer_name}\n",
        "?Mobile on file: {phone}\n",
        "\n{team}\n",
    ],
    [  # 09
        "Dear customer,\n\n",
        "This is your invoice for order {order_id}, issued on {date}.\n\n",
        "?Items:\n- {product}\n\n",
        "Total: {money}\n",
        "?Billed to: {customer_name}, {email}\n",
        "\n{bye_b}\n",
    ],
    [  # 10
        "{store} - billing\n\n",
        "Invoice for: {customer_name}\n",
        "Order number: {order_id}\n",
        "?Order date: {date}\n",
        "?Amount: {money}\n",
        "?Payment status: paid\n",
        "?\nIf you did not make this purchase, please contact us.\n",
    ],
    [  # 11 unseen
        "Subject: statement {order_id} / {money}\n\n",
        "{hi_b}\n\n",
        "Please note the enclosed statement",
        "? addressed to {customer_name}",
        ".",
        "? It covers the {product}.",
        "? Settle it online; we may contact you via {phone} or {email}.",
        "\n\n{team}\n",
    ],
    [  # 12
        "Hi {customer_name},\n\n",
        "Thanks for your order. Here's your invoice.\n\n",
        "~Order: #{order_id}\n",
        "~?Date: {date}\n",
        "~?Product: {product}\n",
        "~Total: {money}\n",
        "~?Phone: {phone}\n",
        "\n{bye_b}\n",
    ],
    [  # 13
        "Invoice notice\n\n",
        "We have issued an invoice of {money} for order {order_id}",
        "? on {date}",
        ".\n",
        "?The invoice was emailed to {email}.\n",
        "?It covers: {product}\n",
        "\n{team}\n",
    ],
    [  # 14 unseen
        "{store} statement\n",
        "purchase_ref = {order_id}\n",
        "?issue_date = {date}\n",
        "?payable = {money}\n",
        "?holder = {customer_name}\n",
        "?contact = {email}\n",
        "?line_item = {product}\n",
    ],
]

TEMPLATES["shipping_notice"] = [
    [  # 00
        "Hi {customer_name},\n\n",
        "Good news! Your order {order_id} has shipped.\n\n",
        "Tracking number: {tracking_number}\n",
        "?Carrier: {carrier}\n",
        "?Estimated delivery: {date}\n",
        "?\nItems in this shipment:\n{product}\n",
        "\n{bye_b}\n",
    ],
    [  # 01
        "{hi_b}\n\n",
        "Your package is on its way! You can track it with {carrier} using tracking number {tracking_number}.",
        "? It should arrive by {date}.",
        "\n\n",
        "?Order: #{order_id}\n",
        "?Item: {product}\n",
        "\n{team}\n",
    ],
    [  # 02 unseen
        "Dispatch advice - {store}\n\n",
        "Consignee - {customer_name}\n",
        "Waybill - {tracking_number}\n",
        "?Handed to {carrier} {date}\n",
        "?Contents - {product}\n",
        "?Linked purchase {order_id}\n",
    ],
    [  # 03
        "Subject: Your order {order_id} has shipped\n\n",
        "Dear {customer_name},\n\n",
        "We have shipped your order",
        "? on {date}",
        ". The tracking number is {tracking_number}.",
        "? It contains: {product}.",
        "\n\n{bye_b}\n",
    ],
    [  # 04
        "{store}: your order {order_id} shipped",
        "? {date}",
        ". Track: {tracking_number}",
        "? ({carrier})",
        ".",
        "? Item: {product}.",
        "\n",
    ],
    [  # 05 unseen
        "{customer_name} - your parcel is moving.\n\n",
        "{carrier} consignment {tracking_number}",
        "? left our warehouse {date}",
        ".\n",
        "?It holds the {product} from purchase {order_id}.\n",
        "?Text updates go to {phone}.\n",
        "\n{team}\n",
    ],
    [  # 06
        "SHIPPING CONFIRMATION\n\n",
        "~Order number: {order_id}\n",
        "~Tracking number: {tracking_number}\n",
        "~?Ship date: {date}\n",
        "~?Ship to: {customer_name}\n",
        "~?Product: {product}\n",
        "~?Carrier: {carrier}\n",
        "\nYou can track your package on the carrier's website.\n",
    ],
    [  # 07
        "Hello {customer_name},\n\n",
        "Your {product} is on the way!\n\n",
        "?Shipped on: {date}\n",
        "Tracking: {tracking_number}\n",
        "?Order #{order_id}\n",
        "?\nWe'll email {email} when it's delivered.\n",
        "\n{bye_b}\n",
    ],
    [  # 08 unseen
        "{hi_b}\n\n",
        "Package dispatched. Reference details:\n\n",
        "~- AWB {tracking_number}\n",
        "~?- ETA {date}\n",
        "~?- recipient {customer_name}\n",
        "~?- contents {product}\n",
        "~?- purchase {order_id}\n",
        "\n{team}\n",
    ],
    [  # 09
        "Dear customer,\n\n",
        "Order {order_id} has been shipped via {carrier}.\n",
        "Tracking number: {tracking_number}\n",
        "?Expected delivery: {date}\n",
        "?Shipment contents: {product}\n",
        "?Delivery phone: {phone}\n",
        "\n{bye_b}\n{team}\n",
    ],
    [  # 10
        "Your shipment is on its way\n\n",
        "Hi {customer_name}, we've sent {product} (order {order_id}).",
        "? Estimated arrival: {date}.",
        "\n\nTrack your package: {tracking_number}\n",
        "\n{team}\n",
    ],
    [  # 11 unseen
        "Subject: parcel {tracking_number} en route\n\n",
        "{hi_b}\n\n",
        "A parcel for {customer_name} is en route with {carrier}.",
        "? ETA is {date}.",
        "? Purchase ref. {order_id}.",
        "\n\n",
        "?Questions can go to our help desk; please quote the parcel number above.\n",
        "\n{team}\n",
    ],
    [  # 12
        "{hi_b}\n\n",
        "We thought you'd like to know that your order has shipped.\n\n",
        "Order number: {order_id}\n",
        "Tracking number: {tracking_number}\n",
        "?Shipped on: {date}\n",
        "?\nItems:\n{qty} x {product}\n",
        "\n{bye_b}\n",
    ],
    [  # 13
        "Tracking update for {customer_name}\n\n",
        "Your package with tracking number {tracking_number} is out for delivery",
        "? and should arrive on {date}",
        ".\n",
        "?This delivery is for order #{order_id}.\n",
        "?Product: {product}\n",
        "?We sent a copy of this notice to {email}.\n",
    ],
    [  # 14 unseen
        "Dispatch summary\n",
        "| consignment | {tracking_number} |\n",
        "?| purchase    | {order_id} |\n",
        "?| addressee   | {customer_name} |\n",
        "?| handed over | {date} |\n",
        "?| goods       | {product} |\n",
        "\n{team}\n",
    ],
]

TEMPLATES["support_email"] = [
    [  # 00
        "{hi_c}\n\n",
        "I ordered the {product}",
        "? on {date}",
        " and it still hasn't arrived. My order number is {order_id}.",
        "? The tracking number {tracking_number} hasn't updated in days.",
        "\n\n",
        "?You can reach me at {phone}.\n\n",
        "{bye_c}\n{customer_name}\n",
    ],
    [  # 01
        "Subject: Problem with order #{order_id}\n\n",
        "{hi_c}\n\n",
        "My name is {customer_name}",
        "? and I placed an order on {date}",
        ". The {product} I received is damaged.",
        "? Please contact me at {email} or call {phone}.",
        "\n\n{bye_c}\n",
    ],
    [  # 02 unseen
        "{customer_name} here.\n\n",
        "Purchase ref {order_id}: the {product} has a fault",
        "? ever since {date}",
        ".\n",
        "?Best way to reach me: mobile {phone}.\n",
        "?Alternatively reply to {email}.\n",
    ],
    [  # 03
        "Hi {customer_name},\n\n",
        "Thanks for contacting {store} support about order {order_id}.",
        "? I can see the {product} was delivered on {date}.",
        "? The tracking number is {tracking_number}.",
        "\n\n",
        "?If you'd prefer, we can call you at {phone}.\n",
        "\n{bye_b}\n{staff}\n{store} Support\n",
    ],
    [  # 04
        "{hi_c}\n\n",
        "I need help with my order {order_id}.",
        " I received the wrong item: instead of the {product} I got something else.",
        "? The package arrived on {date}.",
        "\n\n",
        "?My email is {email} and my phone number is {phone}.\n",
        "\n{bye_c}\n{customer_name}\n",
    ],
    [  # 05 unseen
        "Hey {store} folks,\n\n",
        "this is {customer_name} writing about purchase {order_id}.",
        "? The parcel code {tracking_number} shows no movement.",
        "? The courier says it left the depot {date}.",
        "\n",
        "?Mobile: {phone}\n",
        "\n- {customer_name}\n",
    ],
    [  # 06
        "{hi_c}\n\n",
        "Could you tell me when my order will arrive? Order number: {order_id}.",
        "? I ordered it on {date}.",
        "? It's the {product}.",
        "\n\n",
        "{bye_c}\n{customer_name}\n",
        "?Phone: {phone}\n",
        "?Email: {email}\n",
    ],
    [  # 07
        "Subject: {product} not working\n\n",
        "{hi_c}\n\n",
        "The {product} I received stopped working after a week.",
        " My order number is {order_id}",
        "? and it was delivered on {date}",
        ".\n\n",
        "?Please email me at {email}.\n",
        "\n{bye_c}\n{customer_name}\n",
    ],
    [  # 08 unseen
        "{hi_c}\n\n",
        "Quick summary of my issue:\n",
        "~* purchase: {order_id}\n",
        "~?* turned up {date}\n",
        "~?* thing that broke: {product}\n",
        "~?* courier code: {tracking_number}\n",
        "~?* best number: {phone}\n",
        "\nAppreciate the help,\n{customer_name}\n",
    ],
    [  # 09
        "{hi_c}\n\n",
        "I'm writing about order #{order_id}.",
        "? The tracking number {tracking_number} says delivered but I never got the package.",
        "? The item is the {product}.",
        "\n\n",
        "?Please call me at {phone} or email me at {email}.\n",
        "\n{bye_c}\n{customer_name}\n",
    ],
    [  # 10
        "New message from the contact form\n\n",
        "Name: {customer_name}\n",
        "?Email: {email}\n",
        "?Phone: {phone}\n",
        "?Order number: {order_id}\n",
        "Message:\n",
        "Hi, my {product} arrived with a missing part. Can you send a replacement?\n",
    ],
    [  # 11 unseen
        "Subject: re purchase {order_id} - still waiting\n\n",
        "{hi_c}\n\n",
        "It has been ages since {date} and nothing turned up.",
        "? The courier code I was given is {tracking_number}.",
        "? What I am waiting for: {product}.",
        "\n\n",
        "?Drop me a line at {email}.\n",
        "\nYours,\n{customer_name}\n",
    ],
    [  # 12
        "{hi_c}\n\n",
        "I would like to change the delivery address for order {order_id}.",
        "? It was placed on {date}.",
        "? It contains the {product}.",
        "\n\n",
        "?My phone number is {phone}.\n",
        "\n{bye_c}\n{customer_name}\n",
    ],
    [  # 13
        "Dear {customer_name},\n\n",
        "We're sorry to hear about the problem with your {product}.",
        "? We have opened a case for order {order_id}.",
        "? Our team will contact you at {email} shortly.",
        "? Your replacement will ship with tracking number {tracking_number}.",
        "\n\n{bye_b}\n{staff}\n{store} Customer Care\n",
    ],
    [  # 14 unseen
        "pls help - purchase {order_id} wrong size",
        "?, {product} came instead",
        ". ",
        "?Text me back: {phone}. ",
        "?Parcel code {tracking_number}. ",
        "\n",
        "{customer_name}\n",
    ],
]

TEMPLATES["refund_request"] = [
    [  # 00
        "{hi_c}\n\n",
        "I would like to request a refund for order {order_id}.",
        "? I paid {money} for it.",
        "? The order was placed on {date}.",
        " The {product} arrived damaged.",
        "\n\n",
        "?You can reach me at {email}.\n",
        "\n{bye_c}\n{customer_name}\n",
    ],
    [  # 01
        "Subject: Refund request - order #{order_id}\n\n",
        "{hi_c}\n\n",
        "I returned the {product} on {date} and I am still waiting for my refund of {money}.",
        "? Could you please check?",
        "\n\n",
        "?My phone number is {phone}.\n",
        "\n{bye_c}\n{customer_name}\n",
    ],
    [  # 02 unseen
        "{customer_name} again.\n\n",
        "Please reverse the charge of {money}",
        "? booked against purchase {order_id}",
        ".",
        "? Your warehouse got the {product} back {date}.",
        "\n",
        "?Mobile: {phone}\n",
    ],
    [  # 03
        "Dear {store} team,\n\n",
        "I am writing to ask for a refund.",
        " My order number is {order_id}",
        "? and the total was {money}",
        ".",
        "? I ordered the {product} on {date} but it never arrived.",
        "\n\n",
        "?Please send the confirmation to {email}.\n",
        "\n{bye_c}\n{customer_name}\n",
    ],
    [  # 04
        "Refund request form\n\n",
        "~Name: {customer_name}\n",
        "~Order number: {order_id}\n",
        "~?Order date: {date}\n",
        "~?Refund amount: {money}\n",
        "~?Product: {product}\n",
        "~?Email: {email}\n",
        "~?Phone: {phone}\n",
        "Reason: {reason}\n",
    ],
    [  # 05 unseen
        "{hi_c}\n\n",
        "Money back please regarding the {product}",
        "? (purchase {order_id})",
        ": {reason}.",
        "? It cost me {money}.",
        "? Bought it {date}.",
        "\n\n",
        "?Reimburse the card I used and confirm via {email}.\n",
        "\nYours,\n{customer_name}\n",
    ],
    [  # 06
        "{hi_c}\n\n",
        "I was charged twice for order {order_id}.",
        "? Each charge was {money}.",
        "? The order was placed on {date}.",
        " Please refund the duplicate payment.\n\n",
        "?My email is {email} and my phone number is {phone}.\n",
        "\n{bye_c}\n{customer_name}\n",
    ],
    [  # 07
        "Subject: Return and refund\n\n",
        "{hi_c}\n\n",
        "I'd like to return the {product} from order #{order_id} and get a refund.",
        "? The amount was {money}.",
        "? It was delivered on {date}.",
        "? Reason: {reason}.",
        "\n\n{bye_c}\n{customer_name}\n",
        "?{phone}\n",
    ],
    [  # 08 unseen
        "To the {store} accounts team,\n\n",
        "Reimbursement needed:\n",
        "~- purchase {order_id}\n",
        "~?- sum {money}\n",
        "~?- goods {product}\n",
        "~?- bought {date}\n",
        "~?- contact {email}\n",
        "\nThis is {customer_name}, awaiting your answer.\n",
    ],
    [  # 09
        "{hi_c}\n\n",
        "My order {order_id} was cancelled but I haven't received a refund yet.",
        "? I paid {money} on {date}.",
        "? The item was the {product}.",
        "\n\n",
        "?Please contact me at {phone}.\n",
        "\n{bye_c}\n{customer_name}\n",
    ],
    [  # 10
        "Dear customer service,\n\n",
        "Please refund {money} for order {order_id}.",
        " The {product} was not what I expected.",
        "? I received it on {date}.",
        "\n\n",
        "?Email: {email}\n",
        "?Phone: {phone}\n",
        "\n{bye_c}\n{customer_name}\n",
    ],
    [  # 11 unseen
        "Subject: money back for {order_id}?\n\n",
        "{hi_c}\n\n",
        "{customer_name} writing. I sent the {product} back",
        "? last week ({date})",
        " and would like to be reimbursed",
        "? the {money} I spent",
        ".\n\n",
        "?Any questions, text this number: {phone}\n",
    ],
    [  # 12
        "{hi_c}\n\n",
        "I would like a refund for the {product} I ordered",
        "? on {date}",
        ". Order number: {order_id}.",
        "? Total paid: {money}.",
        "\n\n{bye_c}\n{customer_name}\n",
        "?{email}\n",
    ],
    [  # 13
        "Hello,\n\n",
        "Requesting a refund for order {order_id} placed on {date}.",
        "? The refund amount should be {money}.",
        "? Product: {product}.",
        "\n\nThank you,\n{customer_name}\n",
        "?Phone: {phone}\n",
    ],
    [  # 14 unseen
        "Re: purchase {order_id}\n\n",
        "Yes - the {product} has to go back. Kindly credit {money} to my card.",
        "? Paid for it {date}.",
        "? My cell is {phone}.",
        "\n\n- {customer_name}\n",
    ],
]

BUSINESS_KINDS = ("order_confirmation", "invoice", "shipping_notice")

# ------------------------------------------------------------ values


def ascii_fold(s):
    """s without accents, lower case, letters and digits only (for emails)."""
    s = s.replace("ø", "o").replace("Ø", "O").replace("ł", "l").replace("æ", "ae")
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if c.isascii() and c.isalnum()).lower()


def digits(rng, n):
    return "".join(rng.choice("0123456789") for _ in range(n))


def make_order_id(rng, year):
    r = rng.randrange(8)
    if r == 0:
        return "%s-%s" % (rng.choice("ABCDEFGHJKLMNPRSTW"), digits(rng, 5))
    if r == 1:
        return "ORD-%d-%s" % (year, digits(rng, 5))
    if r == 2:
        return str(rng.randint(100000, 999999999))
    if r == 3:
        return "%s-%s-%s" % (digits(rng, 3), digits(rng, 7), digits(rng, 7))
    if r == 4:
        return "SO" + digits(rng, 6)
    if r == 5:
        return rng.choice(["NW", "BX", "KT", "QP", "HM"]) + digits(rng, 6)
    if r == 6:
        return "WEB/%d/%s" % (year, digits(rng, 5))
    return "%s-%s" % (digits(rng, 5), rng.choice("ABCDEFGH"))


def make_tracking(rng):
    """Returns (tracking number, carrier name)."""
    r = rng.randrange(7)
    if r == 0:
        alnum = "ABCDEFGHJKLMNPRSTUVWXY0123456789"
        return ("1Z" + "".join(rng.choice(alnum) for _ in range(6))
                + digits(rng, 10), CARRIERS["ups"])
    if r == 1:
        return rng.choice(["9400", "9205", "9361"]) + digits(rng, 18), CARRIERS["usps"]
    if r == 2:
        return str(rng.randint(1000000000, 9999999999)), CARRIERS["dhl"]
    if r == 3:
        return str(rng.randint(100000000000, 999999999999)), CARRIERS["fedex"]
    if r == 4:
        return (rng.choice(["AB", "RM", "LX", "KE"]) + digits(rng, 9) + "GB",
                CARRIERS["royalmail"])
    if r == 5:
        return "JD" + digits(rng, 18), CARRIERS["jd"]
    return "LZ" + digits(rng, 9) + "CN", CARRIERS["chinapost"]


def make_date(rng):
    d = datetime.date(2021, 1, 1) + datetime.timedelta(days=rng.randrange(5 * 365))
    m, day, y = MONTHS[d.month - 1], d.day, d.year
    wd = WEEKDAYS[d.weekday()]
    r = rng.randrange(14)
    if r == 0:
        s = "%d-%02d-%02d" % (y, d.month, day)
    elif r == 1:
        s = "%s %d, %d" % (m, day, y)
    elif r == 2:
        s = "%02d/%02d/%d" % (day, d.month, y)
    elif r == 3:
        s = "%02d/%02d/%d" % (d.month, day, y)
    elif r == 4:
        s = "%d %s %d" % (day, m[:3], y)
    elif r == 5:
        s = "%s, %d %s %d" % (wd[:3], day, m, y)
    elif r == 6:
        s = "%d %s %d" % (day, m, y)
    elif r == 7:
        s = "%s %d, %d" % (m[:3], day, y)
    elif r == 8:
        suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
        s = "%s %d%s, %d" % (m, day, suffix, y)
    elif r == 9:
        s = "%d/%02d/%02d" % (y, d.month, day)
    elif r == 10:
        s = "%02d.%02d.%d" % (day, d.month, y)
    elif r == 11:
        s = "%s, %s %d, %d" % (wd, m, day, y)
    elif r == 12:
        s = "%d-%s-%d" % (day, m[:3], y)
    else:
        s = "%s %d" % (m[:3], day)
    return s, y


def make_phone(rng):
    r = rng.randrange(10)
    line = "01%02d" % rng.randrange(100)          # 555-01XX: fictional numbers
    area = "%d%d%d" % (rng.randint(2, 9), rng.randint(0, 8), rng.randint(0, 9))
    if r == 0:
        return "(%s) 555-%s" % (area, line)
    if r == 1:
        return "%s-555-%s" % (area, line)
    if r == 2:
        return "+1 %s 555 %s" % (area, line)
    if r == 3:
        return "+1 555 %s %s" % (digits(rng, 3), digits(rng, 4))
    if r == 4:
        return "%s.555.%s" % (area, line)
    if r == 5:
        return "+1 (%s) 555-%s" % (area, line)
    if r == 6:
        return "+44 20 7946 0%s" % digits(rng, 3)   # Ofcom drama range
    if r == 7:
        return rng.choice(["+44 7700 900", "07700 900"]) + digits(rng, 3)
    if r == 8:
        return "020 7946 0" + digits(rng, 3)
    return "+61 2 5550 " + digits(rng, 4)           # ACMA fiction range


def make_name(rng):
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    if rng.random() < 0.12:
        full = "%s %s. %s" % (first, rng.choice("ABCDEFGHJKLMNPRSTW"), last)
    else:
        full = "%s %s" % (first, last)
    return first, last, full


def make_email(rng, first, last):
    f, l = ascii_fold(first), ascii_fold(last)
    r = rng.randrange(8)
    if r == 0:
        local = "%s.%s" % (f, l)
    elif r == 1:
        local = f[0] + l
    elif r == 2:
        local = "%s_%s" % (f, l)
    elif r == 3:
        local = "%s%s%d" % (f, l, rng.randint(1, 99))
    elif r == 4:
        local = "%s.%s" % (f, l[0])
    elif r == 5:
        local = "%s.%s" % (l, f)
    elif r == 6:
        local = f + str(rng.randint(70, 2005))
    else:
        local = rng.choice(HANDLE_WORDS) + rng.choice(["", ".", "_"]) \
            + rng.choice(HANDLE_WORDS) + str(rng.randint(1, 99))
    return "%s@%s" % (local, rng.choice(DOMAINS))


def make_product(rng):
    """A product name of 1 to 5 words: [brand] [adjectives] noun [size]."""
    parts = []
    if rng.random() < 0.7:
        parts.append(rng.choice(BRANDS))
    for _ in range(rng.choice((0, 0, 1, 1, 1, 2))):
        parts.append(rng.choice(ADJECTIVES))
    nouns, sizes = rng.choice(PRODUCT_FAMILIES)
    noun = rng.choice(nouns)
    size = rng.choice(sizes) if rng.random() < 0.4 else None
    words = lambda: sum(len(p.split()) for p in parts) + len(noun.split()) \
        + (len(size.split()) if size else 0)
    while words() > 5:
        if size:
            size = None
        else:
            parts.pop()
    if rng.random() < 0.1 and not parts and not size:
        noun = noun.split()[-1]                     # a one-word product
    return " ".join(parts + [noun] + ([size] if size else []))


class Money:
    """An amount and its currency, and how they are written."""

    def __init__(self, rng):
        self.code = rng.choices(["USD", "EUR", "GBP"], weights=[5, 3, 2])[0]
        r = rng.random()
        if r < 0.5:
            units = rng.randint(12, 99)
        elif r < 0.88:
            units = rng.randint(100, 999)
        else:
            units = rng.randint(1000, 9999)
        cents = 0 if rng.random() < 0.25 else rng.randint(1, 99)
        self.normalized = "%d.%02d" % (units, cents)
        euro = self.code == "EUR" and rng.random() < 0.4
        dec, thou = (",", ".") if euro else (".", ",")
        ip = str(units)
        if units >= 1000 and rng.random() < 0.6:
            ip = ip[:-3] + thou + ip[-3:]
        if cents == 0 and thou not in ip and rng.random() < 0.5:
            self.number = ip                        # "45", "$45"
        else:
            self.number = "%s%s%02d" % (ip, dec, cents)
        self.has_currency = rng.random() < P_CURRENCY
        self.symbol = rng.random() < 0.55
        self.currency = CURRENCY_SYMBOL[self.code] if self.symbol else self.code
        # layout of {money}: "$45.00", "45,00 €", "45,00€", "45.00 EUR", "EUR 45.00"
        if not self.has_currency:
            self.layout = [(self.number, "amount")]
        elif self.symbol:
            if self.code == "EUR" and (euro or rng.random() < 0.3):
                self.layout = [(self.number, "amount"),
                               (rng.choice((" ", " ", "")), None),
                               (self.currency, "currency")]
            else:
                self.layout = [(self.currency, "currency"), (self.number, "amount")]
        elif rng.random() < 0.65:
            self.layout = [(self.number, "amount"), (" ", None),
                           (self.currency, "currency")]
        else:
            self.layout = [(self.currency, "currency"), (" ", None),
                           (self.number, "amount")]


def normalize_amount(s):
    """A written amount ("1,299.00", "1.299,00", "$45") as "1299.00", or None."""
    m = re.fullmatch(r"(\d[\d.,]*?)(?:[.,](\d\d))?", s)
    if not m:
        return None
    ip, cents = m.group(1), m.group(2) or "00"
    if not re.fullmatch(r"\d{1,3}(?:[.,]\d{3})*|\d+", ip):
        return None
    return "%d.%s" % (int(re.sub(r"[.,]", "", ip)), cents)

# ------------------------------------------------------------ rendering


SLOT_RE = re.compile(r"\{(\w+)\}")
FILLERS = ("hi_b", "bye_b", "team", "hi_c", "bye_c", "store", "staff",
           "carrier", "qty", "reason")


class Unit:
    def __init__(self, src):
        flags = re.match(r"[~?]*", src).group(0)
        self.optional = "?" in flags
        self.shuffled = "~" in flags
        text = src[len(flags):]
        self.parts = []                 # (is_slot, text)
        pos = 0
        for m in SLOT_RE.finditer(text):
            if m.start() > pos:
                self.parts.append((False, text[pos:m.start()]))
            name = m.group(1)
            if name not in FIELDS and name != "money" and name not in FILLERS:
                raise ValueError("unknown slot {%s} in %r" % (name, src))
            self.parts.append((True, name))
            pos = m.end()
        if pos < len(text):
            self.parts.append((False, text[pos:]))
        self.slots = [t for s, t in self.parts if s and (t in FIELDS or t == "money")]

    def fields(self, has_currency):
        out = []
        for s in self.slots:
            if s == "money":
                out.append("amount")
                if has_currency:
                    out.append("currency")
            else:
                out.append(s)
        return out


class Template:
    def __init__(self, kind, index, units):
        self.kind = kind
        self.id = "%s/%02d" % (kind, index)
        self.split = "unseen" if index % 3 == 2 else "seen"
        self.units = [Unit(u) for u in units]
        for hc in (False, True):
            req = set(f for u in self.units if not u.optional for f in u.fields(hc))
            every = set(f for u in self.units for f in u.fields(hc))
            if len(req) > MAX_FIELDS or len(every) < MIN_FIELDS:
                raise ValueError("%s cannot give %d to %d fields"
                                 % (self.id, MIN_FIELDS, MAX_FIELDS))

    def choose(self, rng, has_currency):
        """The units of one message, in order: 3 to 7 fields."""
        units = self.units
        keep = [not u.optional or rng.random() < P_OPTIONAL for u in units]

        def present():
            return set(f for u, k in zip(units, keep) if k for f in u.fields(has_currency))

        n = len(present())
        while n > MAX_FIELDS:
            cands = [i for i, u in enumerate(units) if keep[i] and u.optional and u.slots]
            keep[rng.choice(cands)] = False
            n = len(present())
        while n < MIN_FIELDS:
            have = present()
            cands = [i for i, u in enumerate(units) if not keep[i]
                     and any(f not in have for f in u.fields(has_currency))]
            keep[rng.choice(cands)] = True
            n = len(present())
        chosen = []
        group = []
        for u, k in zip(units, keep):
            if u.shuffled:
                if k:
                    group.append(u)
                continue
            if group:
                rng.shuffle(group)
                chosen.extend(group)
                group = []
            if k:
                chosen.append(u)
        if group:
            rng.shuffle(group)
            chosen.extend(group)
        return chosen


def load_templates():
    out = {}
    for kind in KINDS:
        out[kind] = [Template(kind, i, u) for i, u in enumerate(TEMPLATES[kind])]
    return out


def render(rng, tpl):
    """One message: returns (text, gold dict)."""
    first, last, name = make_name(rng)
    date, year = make_date(rng)
    tracking, carrier = make_tracking(rng)
    money = Money(rng)
    values = {
        "order_id": make_order_id(rng, year),
        "amount": money.number,
        "currency": money.currency,
        "date": date,
        "email": make_email(rng, first, last),
        "phone": make_phone(rng),
        "tracking_number": tracking,
        "product": make_product(rng),
        "customer_name": name,
    }
    store = rng.choice(STORES)
    ctx = {"store": store, "staff": rng.choice(FIRST_NAMES), "carrier": carrier,
           "qty": str(rng.randint(1, 4)), "reason": rng.choice(REASONS)}
    for key, pool in (("hi_b", HI_B), ("bye_b", BYE_B), ("team", TEAM),
                      ("hi_c", HI_C), ("bye_c", BYE_C)):
        ctx[key] = rng.choice(pool).format(store=store)

    pieces = []                          # [text, field or None]
    for u in tpl.choose(rng, money.has_currency):
        for is_slot, t in u.parts:
            if not is_slot:
                pieces.append([t, None])
            elif t == "money":
                pieces.extend([s, f] for s, f in money.layout)
            elif t in values:
                pieces.append([values[t], t])
            else:
                pieces.append([ctx[t], None])

    add_noise(rng, pieces, tpl.kind, ctx)

    gold = {}
    for t, f in pieces:
        if f is not None:
            if f in gold and gold[f] != t:
                raise AssertionError("%s: two different %s values" % (tpl.id, f))
            gold[f] = t
    if "amount" in gold and rng.random() < P_NORMALIZED:
        gold["amount"] = money.normalized
    text = "".join(t for t, _ in pieces).strip("\n")
    return text, {f: gold[f] for f in FIELDS if f in gold}

# ------------------------------------------------------------ noise


WORD_RE = re.compile(r"[A-Za-z]{4,}")


def add_noise(rng, pieces, kind, ctx):
    business = kind in BUSINESS_KINDS
    if rng.random() < P_DISTRACTOR:
        d = rng.choice(DISTRACTORS_STORE if business else DISTRACTORS_CUSTOMER)
        n = rng.randint(3, 5)
        d = d.format(k=rng.randint(2, n - 1), n=n)
        # after a line, but not between "Regards," and the name under it
        spots = [i for i, (t, f) in enumerate(pieces) if f is None
                 and t.endswith("\n") and not t.rstrip("\n").endswith(",")]
        if spots:
            pieces.insert(rng.choice(spots) + 1, [d + "\n", None])
    if rng.random() < P_SIGNATURE:
        sig = rng.choice(SIGNATURES_BUSINESS if business else SIGNATURES_CUSTOMER)
        gap = "\n" if pieces[-1][0].endswith("\n") else "\n\n"
        pieces.append([gap + sig.format(**ctx) + "\n", None])
    if rng.random() < P_QUOTE:
        if business:
            lines, hdrs = QUOTE_LINES_FROM_CUSTOMER, QUOTE_HEADERS_FROM_CUSTOMER
        else:
            lines, hdrs = QUOTE_LINES_FROM_STORE, QUOTE_HEADERS_FROM_STORE
        q = rng.sample(lines, 2)
        hdr = rng.choice(hdrs).format(**ctx)
        pieces.append(["\n\n%s\n> %s\n> %s\n" % (hdr, q[0], q[1]), None])
    if rng.random() < P_FORWARD:
        hdrs = FORWARD_HEADERS_STORE if business else FORWARD_HEADERS_CUSTOMER
        pieces.insert(0, [rng.choice(hdrs).format(**ctx), None])
    if rng.random() < P_BLANK:
        spots = [i for i, (t, f) in enumerate(pieces) if f is None and "\n" in t]
        for i in rng.sample(spots, min(len(spots), rng.randint(1, 2))):
            t = pieces[i][0]
            k = rng.choice([m.start() for m in re.finditer("\n", t)])
            pieces[i][0] = t[:k] + "\n" * rng.randint(2, 3) + t[k + 1:]
    if rng.random() < P_SPACE:
        for _ in range(rng.randint(1, 3)):
            spots = [i for i, (t, f) in enumerate(pieces) if f is None and (" " in t or "\n" in t)]
            if not spots:
                break
            i = rng.choice(spots)
            t = pieces[i][0]
            op = rng.randrange(3)
            if op == 0 and " " in t:            # a wider gap between words
                k = rng.choice([m.start() for m in re.finditer(" ", t)])
                pieces[i][0] = t[:k] + " " * rng.randint(2, 4) + t[k + 1:]
            elif op == 1 and "\n" in t:         # trailing spaces
                k = rng.choice([m.start() for m in re.finditer("\n", t)])
                pieces[i][0] = t[:k] + " " * rng.randint(1, 3) + t[k:]
            elif ": " in t:                     # a tab after a key
                pieces[i][0] = t.replace(": ", ":\t", 1)
    if rng.random() < P_TYPO:
        add_typos(rng, pieces, rng.randint(1, 2))
    if rng.random() < P_RECASE:
        recase_line(rng, pieces)


def add_typos(rng, pieces, n):
    """Swap, drop or double a letter in n words of the text around the values."""
    cands = [(i, m.start(), m.end()) for i, (t, f) in enumerate(pieces) if f is None
             for m in WORD_RE.finditer(t)]
    picks = sorted(rng.sample(cands, min(n, len(cands))), reverse=True)
    for i, s, e in picks:                     # from the end: offsets stay valid
        t = pieces[i][0]
        w = t[s:e]
        k = rng.randint(1, len(w) - 2)
        op = rng.randrange(3)
        if op == 0:
            w = w[:k] + w[k + 1] + w[k] + w[k + 2:]
        elif op == 1:
            w = w[:k] + w[k + 1:]
        else:
            w = w[:k] + w[k] + w[k:]
        pieces[i][0] = t[:s] + w + t[e:]


def recase_line(rng, pieces):
    """Lower- or upper-case one line.  Values on it follow the text, so a line
    is left alone when it holds one of several occurrences of a field (the
    occurrences would then disagree)."""
    text = "".join(t for t, _ in pieces)
    target = rng.randrange(text.count("\n") + 1)
    fn = str.lower if rng.random() < 0.6 else str.upper
    count = {}
    for t, f in pieces:
        if f is not None:
            count[f] = count.get(f, 0) + 1
    line = 0
    for t, f in pieces:
        if line == target and f is not None and count[f] > 1 and fn(t) != t:
            return
        line += t.count("\n")
        if line > target:
            break
    line = 0
    for p in pieces:
        t = p[0]
        if "\n" not in t:
            if line == target:
                p[0] = fn(t)
            continue
        parts = t.split("\n")
        for j in range(len(parts)):
            if line + j == target:
                parts[j] = fn(parts[j])
        line += len(parts) - 1
        p[0] = "\n".join(parts)

# ------------------------------------------------------------ checking


def _word_char(text, i):
    """Whether text[i] belongs to a word: a letter or digit, or punctuation
    between two of them ("A-10293", "1,299.00", "maria@example.com")."""
    c = text[i]
    if c.isalnum():
        return True
    if c.isspace():
        return False
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


def is_boundary(text, i):
    """Whether a token boundary lies between text[i-1] and text[i]."""
    if i <= 0 or i >= len(text):
        return True
    return not (_word_char(text, i - 1) and _word_char(text, i))


def find_span(text, value):
    """The first (start, end) where value occurs at token boundaries, or None."""
    k = text.find(value)
    while k >= 0:
        if is_boundary(text, k) and is_boundary(text, k + len(value)):
            return k, k + len(value)
        k = text.find(value, k + 1)
    return None


def check_row(text, gold):
    """Errors of one generated row (an empty list when it is good)."""
    errs = []
    if not MIN_FIELDS <= len(gold) <= MAX_FIELDS:
        errs.append("%d fields" % len(gold))
    for f, v in gold.items():
        if f not in FIELDS:
            errs.append("unknown field %s" % f)
        elif not v or v != v.strip():
            errs.append("%s: empty or padded value %r" % (f, v))
        elif find_span(text, v) is None:
            if f == "amount" and any(
                    normalize_amount(m.group(0)) == v and is_boundary(text, m.start())
                    and is_boundary(text, m.end())
                    for m in re.finditer(r"\d[\d.,]*\d|\d", text)):
                continue            # a normalized amount: some written amount gives it
            errs.append("%s: %r is not a span of the text" % (f, v))
    return errs

# ------------------------------------------------------------ output


def tsv_escape(s):
    return (s.replace("\\", "\\\\").replace("\n", "\\n")
            .replace("\t", "\\t").replace("\r", "\\r"))


def tsv_unescape(s):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}
                  .get(m.group(1), m.group(1)), s)


def format_row(fmt, text, gold, tpl, csv_writer, buf):
    if fmt == "tsv":
        cols = [tsv_escape(text)]
        for f, v in gold.items():
            cols.append(f)
            cols.append(tsv_escape(v))
        return "\t".join(cols) + "\n"
    buf.seek(0)
    buf.truncate()
    csv_writer.writerow([text, json.dumps(gold, ensure_ascii=False), tpl.kind, tpl.id])
    return buf.getvalue()


def parse_row(fmt, line):
    """Reads back one formatted row: (text, gold)."""
    if fmt == "tsv":
        cols = line.rstrip("\n").split("\t")
        return tsv_unescape(cols[0]), {cols[i]: tsv_unescape(cols[i + 1])
                                       for i in range(1, len(cols), 2)}
    row = next(csv.reader(io.StringIO(line)))
    return row[0], json.loads(row[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--phrasings", choices=["seen", "unseen", "all"], default="all")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="comma-separated subset of " + ",".join(KINDS))
    ap.add_argument("--format", choices=["csv", "tsv"], default="csv")
    ap.add_argument("--out", help="output file (default: standard output)")
    ap.add_argument("--check", action="store_true",
                    help="verify every row (gold values are spans of the text, "
                         "3 to 7 fields, the row reads back); exit 1 on a failure")
    ap.add_argument("--list-templates", action="store_true",
                    help="print each template id and its split, then exit")
    args = ap.parse_args()

    templates = load_templates()
    if args.list_templates:
        for kind in KINDS:
            for t in templates[kind]:
                print("%s\t%s" % (t.id, t.split))
        return 0
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds:
        ap.error("--kinds names no kind")
    for k in kinds:
        if k not in KINDS:
            ap.error("unknown kind %r (kinds: %s)" % (k, ", ".join(KINDS)))
    if args.count < 0:
        ap.error("--count must not be negative")
    pool = {k: [t for t in templates[k] if args.phrasings in ("all", t.split)] for k in kinds}

    rng = random.Random(args.seed)
    out = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout
    if not args.out:
        sys.stdout.reconfigure(encoding="utf-8", newline="\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    chunk = []
    if args.format == "csv":
        chunk.append("input,fields,kind,template\n")
    failures = 0
    for n in range(args.count):
        kind = rng.choice(kinds)
        tpl = rng.choice(pool[kind])
        text, gold = render(rng, tpl)
        line = format_row(args.format, text, gold, tpl, writer, buf)
        if args.check:
            errs = check_row(text, gold)
            if parse_row(args.format, line) != (text, gold):
                errs.append("row does not read back")
            if errs:
                failures += 1
                if failures <= 10:
                    sys.stderr.write("row %d (%s): %s\n%s\n\n"
                                     % (n + 1, tpl.id, "; ".join(errs), text))
        chunk.append(line)
        if len(chunk) >= 2000:
            out.write("".join(chunk))
            chunk = []
    out.write("".join(chunk))
    if args.out:
        out.close()
    else:
        out.flush()
    if args.check:
        sys.stderr.write("checked %d rows: %d failed\n" % (args.count, failures))
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:          # e.g. piped into head
        sys.stderr.close()
        sys.exit(1)
